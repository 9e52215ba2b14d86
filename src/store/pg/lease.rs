//! Leadership of an active/standby group: one row, a lease on the
//! database's clock, and an epoch that rises at each takeover (River's
//! leader table, Temporal's range-id fencing). A node takes the lease only
//! once it has expired; the leader renews it with its epoch; every commit
//! checks the epoch in its own transaction (`commit.rs`), so a leader that
//! was paused or cut off past its lease commits nothing.

use std::time::Duration;

use super::*;

/// Who leads, as the lease row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub node: String,
    pub url: String,
    pub epoch: i64,
}

/// One node's hold on the lease row.
pub struct Lease {
    url: String,
    conn: Option<Conn>,
    node: String,
    public_url: String,
    lease_ms: f64,
}

/// What a campaign found: this node leads (at `epoch`), or another does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Campaign {
    Won(i64),
    Held(Option<Leader>),
}

impl Lease {
    pub fn new(url: &str, node: &str, public_url: &str, lease: Duration) -> Lease {
        Lease {
            url: url.to_string(),
            conn: None,
            node: node.to_string(),
            public_url: public_url.to_string(),
            lease_ms: lease.as_secs_f64() * 1000.0,
        }
    }

    /// A connection, opened again after a failure.
    fn with<T>(
        &mut self,
        f: impl Fn(&mut Conn, &Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        blocking(|| {
            let mut c = match self.conn.take() {
                Some(c) if !c.is_closed() => c,
                _ => self.open()?,
            };
            let mut out = f(&mut c, self);
            // A connection the server dropped (a restart) is found closed
            // only by its next use: that use is made again, once, anew.
            if out.is_err() && c.is_closed() {
                c = self.open()?;
                out = f(&mut c, self);
            }
            if out.is_ok() {
                self.conn = Some(c);
            }
            out
        })
    }

    fn open(&self) -> Result<Conn, StoreError> {
        let mut c = connect(&self.url)?;
        schema::migrate(&mut c)?;
        // Waiting on a row lock must not stall the campaign (a paused
        // leader's commit holds the row until the server ends its session:
        // see `commit_connection`).
        c.batch_execute(&format!(
            "SET lock_timeout = {0}; SET statement_timeout = {0}",
            (l_ms(self.lease_ms) / 3).max(500)
        ))?;
        Ok(c)
    }

    /// Takes the lease if it is free or expired (the epoch rises), else
    /// says who holds it.
    pub fn campaign(&mut self) -> Result<Campaign, StoreError> {
        self.with(|c, l| {
            let won = c.query_opt(
                "INSERT INTO leader (id, node, url, epoch, expires_at)
                 VALUES (1, $1, $2, 1, now() + $3 * interval '1 millisecond')
                 ON CONFLICT (id) DO UPDATE SET node = excluded.node, url = excluded.url,
                     epoch = leader.epoch + 1, expires_at = excluded.expires_at
                 WHERE leader.expires_at < now()
                 RETURNING epoch",
                &[&l.node, &l.public_url, &l.lease_ms],
            )?;
            if let Some(r) = won {
                return Ok(Campaign::Won(r.try_get(0)?));
            }
            Ok(Campaign::Held(leader(c)?))
        })
    }

    /// Renews the lease held at `epoch`; false when it was taken meanwhile.
    pub fn renew(&mut self, epoch: i64) -> Result<bool, StoreError> {
        self.with(|c, l| {
            Ok(c.query_opt(
                "UPDATE leader SET expires_at = now() + $3 * interval '1 millisecond'
                 WHERE id = 1 AND node = $1 AND epoch = $2 RETURNING 1",
                &[&l.node, &epoch, &l.lease_ms],
            )?
            .is_some())
        })
    }

    /// Gives the lease up at a planned stop, so a standby need not wait it out.
    pub fn release(&mut self, epoch: i64) -> Result<(), StoreError> {
        self.with(|c, l| {
            c.execute(
                "UPDATE leader SET expires_at = now() WHERE id = 1 AND node = $1 AND epoch = $2",
                &[&l.node, &epoch],
            )?;
            Ok(())
        })
    }
}

/// Milliseconds, whole.
fn l_ms(ms: f64) -> u64 {
    ms.max(0.0) as u64
}

fn leader(c: &mut Conn) -> Result<Option<Leader>, StoreError> {
    c.query_opt("SELECT node, url, epoch FROM leader WHERE id = 1", &[])?
        .map(|r| {
            Ok(Leader {
                node: r.try_get(0)?,
                url: r.try_get(1)?,
                epoch: r.try_get(2)?,
            })
        })
        .transpose()
}

/// The first statement of every commit of a leader: it fails, with
/// [`NOT_LEADER`], unless the node's epoch still holds an unexpired lease,
/// and the server then refuses every later statement of the transaction
/// (schema step 3). It takes the lease row `FOR SHARE`, so a takeover
/// cannot slip in before the commit ends.
pub(super) const STILL_LEADS: &str = "SELECT branchguard_still_leads($1, $2)";

/// The SQLSTATE of a refused [`STILL_LEADS`].
pub(super) const NOT_LEADER: &str = "BG001";

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AuditKey {
        AuditKey::from_bytes(&[9u8; 32])
    }

    fn events(r: &PgReader) -> usize {
        r.list_events(&EventQuery {
            limit: 100,
            scope: crate::scope::Scope::all(),
            ..Default::default()
        })
        .unwrap()
        .items
        .len()
    }

    /// The fence goes in the same round trip as the commit it guards: a
    /// writer whose epoch was taken over is refused by the server, with
    /// `NotLeader`, and nothing of its round is kept; the new leader's
    /// writer commits.
    #[test]
    fn a_commit_of_an_epoch_taken_over_is_refused_whole() {
        let db = testing::Database::create();
        let lease = Duration::from_secs(30);
        let mut a = Lease::new(db.url(), "bg-a", "http://a", lease);
        let mut b = Lease::new(db.url(), "bg-b", "http://b", lease);
        assert_eq!(a.campaign().unwrap(), Campaign::Won(1));
        let (mut wa, r) = open(db.url(), key(), Some(("bg-a".into(), 1, lease))).unwrap();
        let world = crate::store::contract::world(&mut wa);
        let before = events(&r);
        assert!(before > 0, "the leader of epoch 1 commits");
        a.release(1).unwrap();
        assert_eq!(b.campaign().unwrap(), Campaign::Won(2));
        let mut e = world.engine;
        let round = crate::store::contract::outage_round(&mut e, world.now);
        match wa.commit(&round) {
            Err(StoreError::NotLeader(m)) => {
                assert!(m.contains("bg-a") && m.contains("epoch 1"), "{m}")
            }
            other => panic!("expected NotLeader, got {other:?}"),
        }
        assert_eq!(events(&r), before, "nothing of the refused round");
        let (mut wb, _) = open(db.url(), key(), Some(("bg-b".into(), 2, lease))).unwrap();
        wb.commit(&round).unwrap();
        assert_eq!(events(&r), before + 1);
    }
}
