//! The audit log's chain, independent of any database: each row's hash
//! covers its content and the previous row's hash, so changing, removing or
//! reordering a row breaks every hash after it. A backend only stores the
//! rows; this module decides what they must say.
//!
//! Since 0.2 the chain is keyed: each hash is an HMAC-SHA256 with the audit
//! key, a secret kept outside the database (`audit.key_file`), so whoever can
//! edit the database cannot recompute the chain after an edit. The first
//! keyed row is `audit.keyed`; rows before it (written by earlier versions)
//! keep their plain SHA-256 and are checked as such. Removing the newest rows
//! leaves a valid shorter chain: that is caught against the chain head the
//! daemon publishes ([`Head`]).
//!
//! **Invariant:** the hash of a row depends only on the row, the previous
//! hash and the key, never on how or where it is stored.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The hash of the row before the first one.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What the first keyed row says.
pub const MARKER: &str = "audit.keyed";

/// The environment variable that may give the key instead of its file (hex).
pub const KEY_ENV: &str = "BRANCHGUARD_AUDIT_KEY";

/// One audit row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub at: String,
    pub entity: String,
    pub what: String,
    pub by: String,
    /// How it came (a token's name, `link`, `local`, `engine`); empty on
    /// rows written before it was recorded.
    pub via: String,
    pub detail: String,
    /// The hash of the row before. Empty when not stored: it is that row's
    /// `hash`, and the chain is checked against that anyway (rows written
    /// since 2026-11-25 leave it out, 64 bytes of about 300).
    pub prev_hash: String,
    pub hash: String,
}

/// The result of checking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditCheck {
    Ok {
        rows: u64,
        /// Whether the rows are signed with the key (false: a log written
        /// entirely by a version before 0.2, never opened by a later one).
        keyed: bool,
        /// The last row's hash: what the `audit_anchor` channel received.
        last: String,
    },
    Broken {
        seq: i64,
        reason: String,
    },
}

/// The secret the chain is signed with.
#[derive(Clone)]
pub struct AuditKey(Arc<Vec<u8>>);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(…)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or write the audit key {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the audit key {0} is not 32 or more hex-encoded bytes")]
    Malformed(String),
    #[error("cannot generate a random audit key: {0}")]
    Random(String),
}

impl AuditKey {
    pub fn from_bytes(b: &[u8]) -> AuditKey {
        AuditKey(Arc::new(b.to_vec()))
    }

    fn parse(text: &str, what: &str) -> Result<AuditKey, KeyError> {
        match hex::decode(text.trim()) {
            Ok(b) if b.len() >= 32 => Ok(AuditKey::from_bytes(&b)),
            _ => Err(KeyError::Malformed(what.to_string())),
        }
    }

    /// The key from [`KEY_ENV`], else from `path`; `None` when neither exists.
    pub fn load(path: &Path) -> Result<Option<AuditKey>, KeyError> {
        if let Ok(v) = std::env::var(KEY_ENV) {
            return AuditKey::parse(&v, KEY_ENV).map(Some);
        }
        match std::fs::read_to_string(path) {
            Ok(t) => AuditKey::parse(&t, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(KeyError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// A new random key written to `path` (its owner's only).
    pub fn create(path: &Path) -> Result<AuditKey, KeyError> {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).map_err(|e| KeyError::Random(e.to_string()))?;
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::private::create_dir(dir).map_err(io)?;
        }
        crate::private::write_new(path, &format!("{}\n", hex::encode(b))).map_err(io)?;
        Ok(AuditKey::from_bytes(&b))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }

    /// A signature over `parts`, for the published head.
    pub fn sign(&self, parts: &[&str]) -> String {
        let mut m = self.mac();
        for p in parts {
            m.update(p.as_bytes());
            m.update(&[0u8]);
        }
        hex::encode(m.finalize().into_bytes())
    }
}

/// The hash of a row written before the chain was keyed: SHA-256 alone.
pub fn hash(
    prev: &str,
    seq: i64,
    at: &str,
    entity: &str,
    what: &str,
    by: &str,
    detail: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [prev, &seq.to_string(), at, entity, what, by, detail] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

/// The hash of a keyed row: HMAC-SHA256 over the same parts and `via`.
#[allow(clippy::too_many_arguments)]
pub fn keyed_hash(
    key: &AuditKey,
    prev: &str,
    seq: i64,
    at: &str,
    entity: &str,
    what: &str,
    by: &str,
    via: &str,
    detail: &str,
) -> String {
    key.sign(&[
        "v2",
        prev,
        &seq.to_string(),
        at,
        entity,
        what,
        by,
        via,
        detail,
    ])
}

/// The end of the chain, as published: how many rows and the last hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub rows: i64,
    pub hash: String,
}

impl Head {
    /// The head as the published file holds it: signed, so it cannot be
    /// written by someone without the key.
    pub fn signed(&self, key: &AuditKey, at: &str) -> String {
        let mac = key.sign(&["head", &self.rows.to_string(), &self.hash, at]);
        serde_json::json!({ "rows": self.rows, "hash": self.hash, "at": at, "mac": mac })
            .to_string()
    }

    /// Reads a signed head; `None` when its signature is wrong.
    pub fn verify_signed(text: &str, key: &AuditKey) -> Option<(Head, String)> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let rows = v["rows"].as_i64()?;
        let hash = v["hash"].as_str()?.to_string();
        let at = v["at"].as_str()?.to_string();
        let mac = v["mac"].as_str()?;
        let want = key.sign(&["head", &rows.to_string(), &hash, &at]);
        (want.len() == mac.len()
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                want.as_bytes(),
                mac.as_bytes(),
            )))
        .then_some((Head { rows, hash }, at))
    }
}

/// The chain's head after the last commit, shared by the writer's thread
/// and whoever publishes it.
#[derive(Debug, Default)]
pub struct AuditHead(std::sync::Mutex<Option<Head>>);

impl AuditHead {
    pub fn set(&self, h: Head) {
        match self.0.lock() {
            Ok(mut g) => *g = Some(h),
            Err(p) => *p.into_inner() = Some(h),
        }
    }

    pub fn get(&self) -> Option<Head> {
        match self.0.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// The published head's file in the data directory, read by `audit verify`.
pub const HEAD_FILE: &str = "audit.head";

/// Writes the signed head file (under a temporary name, then renamed).
pub fn write_head(data_dir: &Path, key: &AuditKey, head: &Head) -> std::io::Result<()> {
    let path = data_dir.join(HEAD_FILE);
    let tmp = data_dir.join(format!("{}.tmp", HEAD_FILE));
    let at = crate::clock::now().to_rfc3339();
    std::fs::write(&tmp, head.signed(key, &at))?;
    std::fs::rename(&tmp, &path)
}

/// The head as last published to the file, with when: `Ok(None)` when
/// none was published yet; an error when the file is there but unreadable
/// or its signature does not hold (forged, or damaged), which `audit verify`
/// reports rather than skip the comparison.
pub fn read_head(data_dir: &Path, key: &AuditKey) -> Result<Option<(Head, String)>, String> {
    let path = data_dir.join(HEAD_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    Head::verify_signed(&text, key).map(Some).ok_or_else(|| {
        format!(
            "the published chain head {} is not signed with the audit key (forged, or damaged)",
            path.display()
        )
    })
}

/// The end of the chain: where the next row attaches.
#[derive(Debug, Clone)]
pub struct Chain {
    seq: i64,
    prev: String,
    key: Option<AuditKey>,
    /// The `audit.keyed` row is in the chain.
    keyed: bool,
}

impl Chain {
    /// The chain after the row `(seq, hash)`, or an empty chain; `keyed`
    /// says whether its `audit.keyed` row is already written.
    pub fn after(last: Option<(i64, String)>, key: Option<AuditKey>, keyed: bool) -> Chain {
        let (seq, prev) = last.unwrap_or((0, GENESIS.to_string()));
        Chain {
            seq,
            prev,
            key,
            keyed,
        }
    }

    /// Whether the next rows must be preceded by the `audit.keyed` row.
    pub fn needs_marker(&self) -> bool {
        self.key.is_some() && !self.keyed
    }

    /// The `audit.keyed` row: from here on every row is signed.
    pub fn marker(&mut self, at: &str) -> AuditRow {
        self.keyed = true;
        let before = self.seq;
        self.append(
            at,
            "daemon",
            MARKER,
            "branchguard",
            "engine",
            &format!(
                "rows after {before} are signed with the audit key (HMAC-SHA256); rows up to {before} were hashed with SHA-256 alone"
            ),
        )
    }

    pub fn head(&self) -> Head {
        Head {
            rows: self.seq,
            hash: self.prev.clone(),
        }
    }

    /// The next row, linked to the chain (which moves on to it).
    pub fn append(
        &mut self,
        at: &str,
        entity: &str,
        what: &str,
        by: &str,
        via: &str,
        detail: &str,
    ) -> AuditRow {
        let seq = self.seq + 1;
        let h = match (&self.key, self.keyed) {
            (Some(k), true) => keyed_hash(k, &self.prev, seq, at, entity, what, by, via, detail),
            _ => hash(&self.prev, seq, at, entity, what, by, detail),
        };
        let row = AuditRow {
            seq,
            at: at.to_string(),
            entity: entity.to_string(),
            what: what.to_string(),
            by: by.to_string(),
            via: via.to_string(),
            detail: detail.to_string(),
            prev_hash: std::mem::replace(&mut self.prev, h.clone()),
            hash: h,
        };
        self.seq = seq;
        row
    }
}

/// Checks rows in `seq` order; stops at the first that does not belong.
#[derive(Debug)]
pub struct Verifier {
    seq: i64,
    prev: String,
    key: Option<AuditKey>,
    keyed: bool,
    rows: u64,
    broken: Option<(i64, String)>,
    /// The head published outside the database: the row it names must be
    /// the one it names (a log rewritten from scratch is not).
    published: Option<Head>,
}

impl Verifier {
    /// `key`: the audit key, without which signed rows cannot be checked.
    pub fn new(key: Option<AuditKey>) -> Verifier {
        Verifier {
            seq: 0,
            prev: GENESIS.to_string(),
            key,
            keyed: false,
            rows: 0,
            broken: None,
            published: None,
        }
    }

    /// Checks the chain against the head published outside the database:
    /// its row must carry its hash, and the chain must reach it.
    pub fn with_head(mut self, published: Option<&Head>) -> Verifier {
        self.published = published.cloned();
        self
    }

    /// Feeds the next row; `false` once the chain is broken (no need to read on).
    pub fn check(&mut self, r: &AuditRow) -> bool {
        if self.broken.is_some() {
            return false;
        }
        let expect = self.seq + 1;
        let signed = self.keyed || (r.what == MARKER && r.entity == "daemon");
        let reason = if r.seq != expect {
            Some(format!("row {expect} is missing (found {})", r.seq))
        } else if !r.prev_hash.is_empty() && r.prev_hash != self.prev {
            Some("its prev_hash does not match the hash of the row before".to_string())
        } else if signed {
            match &self.key {
                None => Some(
                    "it is signed with the audit key, which was not given (audit.key_file or BRANCHGUARD_AUDIT_KEY)"
                        .to_string(),
                ),
                Some(k) => {
                    let want = keyed_hash(
                        k, &self.prev, r.seq, &r.at, &r.entity, &r.what, &r.by, &r.via, &r.detail,
                    );
                    (want != r.hash).then(|| {
                        "its content does not match its signature (altered, or the chain was recomputed without the key)".to_string()
                    })
                }
            }
        } else {
            (hash(
                &self.prev, r.seq, &r.at, &r.entity, &r.what, &r.by, &r.detail,
            ) != r.hash)
                .then(|| "its content does not match its hash (altered)".to_string())
        };
        match reason {
            Some(reason) => {
                self.broken = Some((r.seq, reason));
                false
            }
            None => {
                if let Some(p) = self.published.as_ref().filter(|p| p.rows == r.seq)
                    && p.hash != r.hash
                {
                    self.broken = Some((
                        r.seq,
                        format!(
                            "it is not the row the published chain head names (hash {}…): the log was rewritten after the head was published",
                            p.hash.chars().take(12).collect::<String>()
                        ),
                    ));
                    return false;
                }
                self.keyed |= signed;
                self.seq = r.seq;
                self.prev = r.hash.clone();
                self.rows += 1;
                true
            }
        }
    }

    /// Marks the chain broken at `seq` for a reason found outside it (a
    /// stored row that disagrees with its audit row).
    pub fn fail(&mut self, seq: i64, reason: String) {
        if self.broken.is_none() {
            self.broken = Some((seq, reason));
        }
    }

    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// The head of what was checked so far.
    pub fn head(&self) -> Head {
        Head {
            rows: self.seq,
            hash: self.prev.clone(),
        }
    }

    /// Compares the chain as read with the head the daemon published: the
    /// newest rows removed leave a valid, shorter chain.
    pub fn against(&mut self, published: Option<&Head>) {
        let Some(p) = published else { return };
        if self.broken.is_none() && p.rows > self.seq {
            self.broken = Some((
                self.seq + 1,
                format!(
                    "rows {} to {} are missing: the published chain head says {} rows (hash {}…)",
                    self.seq + 1,
                    p.rows,
                    p.rows,
                    p.hash.chars().take(12).collect::<String>()
                ),
            ));
        }
    }

    /// The result, given the published head to compare with. A key that
    /// exists beside a chain with no `audit.keyed` row means the signed rows
    /// were removed or recomputed.
    pub fn finish(mut self, published: Option<&Head>) -> AuditCheck {
        self.against(published);
        if let Some((seq, reason)) = self.broken {
            return AuditCheck::Broken { seq, reason };
        }
        if self.key.is_some() && !self.keyed && self.rows > 0 {
            return AuditCheck::Broken {
                seq: 1,
                reason: "the log has no signed rows although an audit key exists: its signed rows were removed or recomputed without the key".into(),
            };
        }
        AuditCheck::Ok {
            rows: self.rows,
            keyed: self.keyed,
            last: self.prev,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AuditKey {
        AuditKey::from_bytes(&[9u8; 32])
    }

    fn rows(chain: &mut Chain, n: usize) -> Vec<AuditRow> {
        (0..n)
            .map(|i| {
                chain.append(
                    "2026-11-24T01:00:00.000Z",
                    "incident:1",
                    "step.done",
                    "x",
                    "ops-token",
                    &i.to_string(),
                )
            })
            .collect()
    }

    fn verify(key: Option<AuditKey>, rows: &[AuditRow], head: Option<&Head>) -> AuditCheck {
        let mut v = Verifier::new(key).with_head(head);
        for r in rows {
            if !v.check(r) {
                break;
            }
        }
        v.finish(head)
    }

    /// A log written anew from its first row, consistent in itself, is not
    /// the one whose head was published.
    #[test]
    fn a_log_rewritten_under_its_published_head_is_found_at_the_heads_row() {
        let mut c = Chain::after(None, None, false);
        let genuine = rows(&mut c, 5);
        let head = Head {
            rows: 3,
            hash: genuine[2].hash.clone(),
        };
        assert!(matches!(
            verify(None, &genuine, Some(&head)),
            AuditCheck::Ok { rows: 5, .. }
        ));
        let mut again = Chain::after(None, None, false);
        let mut forged = rows(&mut again, 5);
        forged[1].by = "mallory".into();
        let mut again = Chain::after(None, None, false);
        for r in &mut forged {
            let n = again.append(&r.at, &r.entity, &r.what, &r.by, &r.via, &r.detail);
            *r = n;
        }
        match verify(None, &forged, Some(&head)) {
            AuditCheck::Broken { seq: 3, reason } => {
                assert!(reason.contains("published chain head"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unkeyed_chain_verifies_and_any_change_breaks_it_at_that_row() {
        let mut c = Chain::after(None, None, false);
        let rows = rows(&mut c, 4);
        // Rows stored without their previous hash are checked as strictly:
        // each hash covers the hash of the row before.
        let mut lean = rows.clone();
        for r in &mut lean {
            r.prev_hash.clear();
        }
        for chain in [&rows, &lean] {
            assert_eq!(
                verify(None, chain, None),
                AuditCheck::Ok {
                    rows: 4,
                    keyed: false,
                    last: chain[3].hash.clone(),
                }
            );
            let mut altered = chain.clone();
            altered[2].by = "mallory".into();
            assert!(matches!(
                verify(None, &altered, None),
                AuditCheck::Broken { seq: 3, .. }
            ));
            let mut missing = chain.clone();
            missing.remove(1);
            assert!(matches!(
                verify(None, &missing, None),
                AuditCheck::Broken { seq: 3, .. }
            ));
        }
        let mut wrong = rows.clone();
        wrong[2].prev_hash = rows[0].hash.clone();
        assert_eq!(
            verify(None, &wrong, None),
            AuditCheck::Broken {
                seq: 3,
                reason: "its prev_hash does not match the hash of the row before".into()
            }
        );
    }

    #[test]
    fn a_keyed_chain_cannot_be_recomputed_without_the_key() {
        // Two rows from an earlier version, then the marker and keyed rows.
        let mut c = Chain::after(None, None, false);
        let mut all = rows(&mut c, 2);
        let mut c = Chain::after(Some((2, all[1].hash.clone())), Some(key()), false);
        assert!(c.needs_marker());
        all.push(c.marker("2026-11-24T02:00:00.000Z"));
        assert!(!c.needs_marker());
        all.extend(rows(&mut c, 3));
        assert_eq!(
            verify(Some(key()), &all, Some(&c.head())),
            AuditCheck::Ok {
                rows: 6,
                keyed: true,
                last: c.head().hash,
            }
        );
        // `via` is signed too.
        let mut altered = all.clone();
        altered[4].via = "someone-else".into();
        assert!(matches!(
            verify(Some(key()), &altered, None),
            AuditCheck::Broken { seq: 5, .. }
        ));
        // An edit with the chain recomputed as plain SHA-256 from there on,
        // as an insider with the database but not the key would.
        let mut forged = all.clone();
        forged[3].detail = "forged".into();
        let mut prev = forged[2].hash.clone();
        for r in forged.iter_mut().skip(3) {
            r.hash = hash(&prev, r.seq, &r.at, &r.entity, &r.what, &r.by, &r.detail);
            prev = r.hash.clone();
        }
        assert!(matches!(
            verify(Some(key()), &forged, None),
            AuditCheck::Broken { seq: 4, .. }
        ));
        // The whole log recomputed unkeyed, without the marker.
        let mut c = Chain::after(None, None, false);
        let plain = rows(&mut c, 5);
        assert!(matches!(
            verify(Some(key()), &plain, None),
            AuditCheck::Broken { seq: 1, .. }
        ));
        // The newest rows removed: a valid shorter chain, caught by the head.
        let head = Head {
            rows: 6,
            hash: all[5].hash.clone(),
        };
        assert_eq!(
            verify(Some(key()), &all[..4], Some(&head)),
            AuditCheck::Broken {
                seq: 5,
                reason: format!(
                    "rows 5 to 6 are missing: the published chain head says 6 rows (hash {}…)",
                    &all[5].hash[..12]
                )
            }
        );
        // Without the key, signed rows cannot be checked.
        assert!(matches!(
            verify(None, &all, None),
            AuditCheck::Broken { seq: 3, .. }
        ));
    }

    #[test]
    fn a_signed_head_is_read_back_and_a_forged_one_is_not() {
        let h = Head {
            rows: 7,
            hash: "ab".repeat(32),
        };
        let text = h.signed(&key(), "2026-11-24T01:00:00Z");
        let (back, at) = Head::verify_signed(&text, &key()).unwrap();
        assert_eq!((back, at.as_str()), (h, "2026-11-24T01:00:00Z"));
        let forged = text.replace("\"rows\":7", "\"rows\":3");
        assert!(Head::verify_signed(&forged, &key()).is_none());
        assert!(Head::verify_signed(&text, &AuditKey::from_bytes(&[1u8; 32])).is_none());
    }

    #[test]
    fn a_key_is_created_once_its_owners_only_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        assert!(AuditKey::load(&path).unwrap().is_none());
        let k = AuditKey::create(&path).unwrap();
        assert!(AuditKey::create(&path).is_err(), "never replaced");
        let back = AuditKey::load(&path).unwrap().unwrap();
        assert_eq!(k.sign(&["x"]), back.sign(&["x"]));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
