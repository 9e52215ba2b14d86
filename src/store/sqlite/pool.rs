//! The readers' connections: read-only, opened as needed and reused.

use super::*;

/// Read connections, opened as needed and reused: any number of threads read at once.
pub struct SqliteReader {
    path: PathBuf,
    pool: Mutex<Vec<Connection>>,
}

impl SqliteReader {
    /// A reader of an existing database.
    pub fn open(data_dir: &Path) -> Result<SqliteReader, StoreError> {
        let path = data_dir.join(DB_FILE);
        if !path.exists() {
            return Err(StoreError::Missing(data_dir.to_path_buf()));
        }
        super::schema::up_to_date_for_reading(&path)?;
        let r = SqliteReader {
            path,
            pool: Mutex::new(Vec::new()),
        };
        // Fail now, not on the first request, if it cannot be opened.
        let c = r.connect()?;
        r.give_back(c);
        Ok(r)
    }

    pub(super) fn connect(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(2))?;
        // rusqlite's default (16) is fewer than the statements the delivery
        // worker, the API and the dashboard use on one connection: past it
        // each use would parse and plan its query again.
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    pub(super) fn give_back(&self, c: Connection) {
        if let Ok(mut p) = self.pool.lock()
            && p.len() < 8
        {
            p.push(c);
        }
    }

    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        let conn = match pooled {
            Some(c) => c,
            None => self.connect()?,
        };
        let out = f(&conn);
        // A connection that just failed may be broken: open a fresh one next time.
        if out.is_ok() {
            self.give_back(conn);
        }
        out
    }

    /// Like `with`, inside one read transaction: without it each statement
    /// sees the latest commit, and a commit between two of them shows half
    /// of a round (a step done with no history line saying so).
    pub(super) fn with_snapshot<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with(|conn| {
            let tx = conn.unchecked_transaction()?;
            let out = f(&tx)?;
            tx.finish()?;
            Ok(out)
        })
    }
}
