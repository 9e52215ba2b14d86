//! The audit log's hash chain, independent of any database: each row's hash
//! covers its content and the previous row's hash, so changing, removing or
//! reordering a row breaks every hash after it. A backend only stores the rows;
//! this module decides what they must say.
//!
//! **Invariant:** the hash of a row depends only on the row and the previous hash,
//! never on how or where it is stored.

use sha2::{Digest, Sha256};

/// The hash of the row before the first one.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub at: String,
    pub entity: String,
    pub what: String,
    pub by: String,
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
    Ok { rows: u64 },
    Broken { seq: i64, reason: String },
}

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

/// The end of the chain: where the next row attaches.
#[derive(Debug, Clone)]
pub struct Chain {
    seq: i64,
    prev: String,
}

impl Chain {
    /// The chain after the row `(seq, hash)`, or an empty chain.
    pub fn after(last: Option<(i64, String)>) -> Chain {
        let (seq, prev) = last.unwrap_or((0, GENESIS.to_string()));
        Chain { seq, prev }
    }

    /// The next row, linked to the chain (which moves on to it).
    pub fn append(
        &mut self,
        at: &str,
        entity: &str,
        what: &str,
        by: &str,
        detail: &str,
    ) -> AuditRow {
        let seq = self.seq + 1;
        let h = hash(&self.prev, seq, at, entity, what, by, detail);
        let row = AuditRow {
            seq,
            at: at.to_string(),
            entity: entity.to_string(),
            what: what.to_string(),
            by: by.to_string(),
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
    chain: Chain,
    rows: u64,
    broken: Option<(i64, String)>,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            chain: Chain::after(None),
            rows: 0,
            broken: None,
        }
    }
}

impl Verifier {
    /// Feeds the next row; `false` once the chain is broken (no need to read on).
    pub fn check(&mut self, r: &AuditRow) -> bool {
        if self.broken.is_some() {
            return false;
        }
        let expect = self.chain.seq + 1;
        let reason = if r.seq != expect {
            Some(format!("row {expect} is missing (found {})", r.seq))
        } else if !r.prev_hash.is_empty() && r.prev_hash != self.chain.prev {
            Some("its prev_hash does not match the hash of the row before".to_string())
        } else if hash(
            &self.chain.prev,
            r.seq,
            &r.at,
            &r.entity,
            &r.what,
            &r.by,
            &r.detail,
        ) != r.hash
        {
            Some("its content does not match its hash (altered)".to_string())
        } else {
            None
        };
        match reason {
            Some(reason) => {
                self.broken = Some((r.seq, reason));
                false
            }
            None => {
                self.chain = Chain {
                    seq: r.seq,
                    prev: r.hash.clone(),
                };
                self.rows += 1;
                true
            }
        }
    }

    pub fn finish(self) -> AuditCheck {
        match self.broken {
            Some((seq, reason)) => AuditCheck::Broken { seq, reason },
            None => AuditCheck::Ok { rows: self.rows },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_verifies_and_any_change_breaks_it_at_that_row() {
        let mut c = Chain::after(None);
        let rows: Vec<AuditRow> = (0..4)
            .map(|i| {
                c.append(
                    "2026-11-24T01:00:00.000Z",
                    "incident:1",
                    "step.done",
                    "x",
                    &i.to_string(),
                )
            })
            .collect();
        let verify = |rows: &[AuditRow]| {
            let mut v = Verifier::default();
            for r in rows {
                if !v.check(r) {
                    break;
                }
            }
            v.finish()
        };
        // Rows stored without their previous hash are checked as strictly:
        // each hash covers the hash of the row before.
        let mut lean = rows.clone();
        for r in &mut lean {
            r.prev_hash.clear();
        }
        for chain in [&rows, &lean] {
            assert_eq!(verify(chain), AuditCheck::Ok { rows: 4 });
            let mut altered = chain.clone();
            altered[2].by = "mallory".into();
            assert!(matches!(
                verify(&altered),
                AuditCheck::Broken { seq: 3, .. }
            ));
            let mut missing = chain.clone();
            missing.remove(1);
            assert!(matches!(
                verify(&missing),
                AuditCheck::Broken { seq: 3, .. }
            ));
        }
        let mut wrong = rows.clone();
        wrong[2].prev_hash = rows[0].hash.clone();
        assert_eq!(
            verify(&wrong),
            AuditCheck::Broken {
                seq: 3,
                reason: "its prev_hash does not match the hash of the row before".into()
            }
        );
        let resumed = Chain::after(Some((4, rows[3].hash.clone()))).append("t", "e", "w", "b", "d");
        assert_eq!(resumed.seq, 5);
        assert_eq!(resumed.prev_hash, rows[3].hash);
    }
}
