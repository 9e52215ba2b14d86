//! The writer's commit connection: a round's statements go to the server
//! together and their answers come back together (pipelining), so a commit
//! costs one round trip, not one per statement. The blocking client sends a
//! statement only after the answer to the one before; this one drives the
//! asynchronous client underneath it on a runtime of its own, polling every
//! statement of the transaction at once.

use std::collections::HashMap;

use futures_util::future::{try_join, try_join_all, try_join3};
use postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};

use super::{StoreError, blocking};

/// A statement's parameter, owned by the batch until it is sent.
pub(super) type Param<'a> = Box<dyn ToSql + Sync + Send + 'a>;

/// A statement's parameters, each boxed: `params![ids, names]`.
macro_rules! params {
    ($($x:expr),* $(,)?) => {
        vec![$(Box::new($x) as $crate::store::pg::pipe::Param<'_>),*]
    };
}
pub(super) use params;

/// The statements of one transaction, in order.
#[derive(Default)]
pub(super) struct Batch<'a>(Vec<(&'static str, Vec<Param<'a>>)>);

impl<'a> Batch<'a> {
    pub(super) fn push(&mut self, sql: &'static str, params: Vec<Param<'a>>) {
        self.0.push((sql, params));
    }
}

/// One statement, run before the batch in the same transaction, whose one
/// row must exist for the batch to be sent (the leader's fence).
pub(super) struct Guard<'a> {
    pub sql: &'static str,
    pub params: [&'a (dyn ToSql + Sync); 2],
    /// What to answer when the row does not exist.
    pub refused: Box<dyn FnOnce() -> StoreError + 'a>,
}

pub(super) struct Pipe {
    // Dropped after the client: the connection task lives on it.
    client: Option<Client>,
    rt: Option<tokio::runtime::Runtime>,
    stmts: HashMap<&'static str, Statement>,
}

impl Pipe {
    /// Connects to `url` and runs `setup` (session settings) on the
    /// connection.
    pub(super) fn connect(url: &str, setup: Option<&str>) -> Result<Pipe, StoreError> {
        blocking(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StoreError::Backend(Box::new(e)))?;
            let mut config: tokio_postgres::Config = url.parse()?;
            config.connect_timeout(std::time::Duration::from_secs(5));
            config.application_name("branchguard");
            let (client, connection) = rt.block_on(config.connect(NoTls))?;
            // Driven whenever the runtime is, i.e. during each `block_on`.
            rt.spawn(connection);
            if let Some(setup) = setup {
                rt.block_on(client.batch_execute(setup))?;
            }
            Ok(Pipe {
                client: Some(client),
                rt: Some(rt),
                stmts: HashMap::new(),
            })
        })
    }

    pub(super) fn is_closed(&self) -> bool {
        self.client.as_ref().is_none_or(Client::is_closed)
    }

    /// Runs `batch` in one transaction: `guard` first when given (its answer
    /// decides whether the rest is sent), then every statement and the
    /// COMMIT in one round trip. A statement that fails aborts the
    /// transaction on the server, whose answer to the COMMIT is then a
    /// rollback; its error is the one returned.
    pub(super) fn transaction(
        &mut self,
        guard: Option<Guard<'_>>,
        batch: &Batch<'_>,
    ) -> Result<(), StoreError> {
        blocking(|| self.transaction_here(guard, batch))
    }

    fn transaction_here(
        &mut self,
        guard: Option<Guard<'_>>,
        batch: &Batch<'_>,
    ) -> Result<(), StoreError> {
        let (Some(client), Some(rt)) = (&self.client, &self.rt) else {
            return Err(StoreError::Inconsistent(
                "the commit connection is closed".into(),
            ));
        };
        // Each statement is prepared once per connection, on first use.
        let sqls = guard
            .iter()
            .map(|g| g.sql)
            .chain(batch.0.iter().map(|(s, _)| *s));
        for sql in sqls {
            if !self.stmts.contains_key(sql) {
                let s = rt.block_on(client.prepare(sql))?;
                self.stmts.insert(sql, s);
            }
        }
        let stmt = |sql: &str| {
            self.stmts
                .get(sql)
                .cloned()
                .ok_or_else(|| StoreError::Inconsistent(format!("statement not prepared: {sql}")))
        };
        let params: Vec<Vec<&(dyn ToSql + Sync)>> = batch
            .0
            .iter()
            .map(|(_, p)| p.iter().map(|b| &**b as &(dyn ToSql + Sync)).collect())
            .collect();
        let statements = batch
            .0
            .iter()
            .map(|(sql, _)| stmt(sql))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let begun = match guard {
            Some(g) => {
                let s = stmt(g.sql)?;
                let (_, row) = rt.block_on(try_join(
                    client.batch_execute("BEGIN"),
                    client.query_opt(&s, &g.params),
                ))?;
                if row.is_none() {
                    rt.block_on(client.batch_execute("ROLLBACK"))?;
                    return Err((g.refused)());
                }
                true
            }
            None => false,
        };
        // Polled together, so sent together: BEGIN, the statements, COMMIT.
        rt.block_on(try_join3(
            async {
                if !begun {
                    client.batch_execute("BEGIN").await?;
                }
                Ok(())
            },
            try_join_all(
                statements
                    .iter()
                    .zip(&params)
                    .map(|(s, p)| client.execute(s, p)),
            ),
            client.batch_execute("COMMIT"),
        ))?;
        Ok(())
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which an async task may not do.
        let (client, rt) = (self.client.take(), self.rt.take());
        blocking(|| {
            drop(client);
            drop(rt);
        });
    }
}
