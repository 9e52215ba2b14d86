//! The writer's commit connection: a round's statements go to the server
//! together and their answers come back together (pipelining), so a commit
//! costs one round trip, not one per statement. The blocking client sends a
//! statement only after the answer to the one before; this one drives the
//! asynchronous client underneath it on a runtime of its own, polling every
//! statement of the transaction at once.

use std::collections::HashMap;

use futures_util::future::{try_join_all, try_join3};
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
            // Driven whenever the runtime is, i.e. during each `block_on`.
            let client = match super::tls::target(url)? {
                (config, None) => {
                    let (client, connection) = rt.block_on(config.connect(NoTls))?;
                    rt.spawn(connection);
                    client
                }
                (config, Some(tls)) => {
                    let (client, connection) = rt.block_on(config.connect(tls))?;
                    rt.spawn(connection);
                    client
                }
            };
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

    /// Runs `batch` in one transaction: BEGIN, every statement and COMMIT
    /// in one round trip. A statement that fails aborts the transaction on
    /// the server, whose answer to the COMMIT is then a rollback; the first
    /// error is the one returned (a refused fence as `NotLeader`).
    pub(super) fn transaction(&mut self, batch: &Batch<'_>) -> Result<(), StoreError> {
        blocking(|| self.transaction_here(batch)).map_err(|e| match e.as_db_error() {
            Some(d) if d.code().code() == super::lease::NOT_LEADER => {
                StoreError::NotLeader(d.message().to_string())
            }
            _ => e.into(),
        })
    }

    fn transaction_here(&mut self, batch: &Batch<'_>) -> Result<(), tokio_postgres::Error> {
        let (Some(client), Some(rt)) = (&self.client, &self.rt) else {
            unreachable!("present from connect until drop")
        };
        // Each statement is prepared once per connection, on first use.
        let mut statements = Vec::with_capacity(batch.0.len());
        for (sql, _) in &batch.0 {
            let s = match self.stmts.get(sql) {
                Some(s) => s.clone(),
                None => {
                    let s = rt.block_on(client.prepare(sql))?;
                    self.stmts.insert(sql, s.clone());
                    s
                }
            };
            statements.push(s);
        }
        let params: Vec<Vec<&(dyn ToSql + Sync)>> = batch
            .0
            .iter()
            .map(|(_, p)| p.iter().map(|b| &**b as &(dyn ToSql + Sync)).collect())
            .collect();
        // Polled together, so sent together: BEGIN, the statements, COMMIT.
        rt.block_on(try_join3(
            client.batch_execute("BEGIN"),
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
