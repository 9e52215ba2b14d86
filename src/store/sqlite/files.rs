//! A file removed or replaced under the running daemon: found before each
//! write by the files' identities, and answered by writing what the
//! connection still holds back to the database's path.

use super::*;

#[cfg(unix)]
pub(super) fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
pub(super) fn identity(_: &Path) -> Option<(u64, u64)> {
    None
}

pub(super) fn identity_of_wal(db: &Path) -> Option<(u64, u64)> {
    identity(&PathBuf::from(format!("{}-wal", db.display())))
}

impl SqliteWriter {
    /// Refuses to write once the database file or its WAL is not the one
    /// this connection writes: the first time, the connection's view (which
    /// the open descriptors still hold whole) is saved back to the
    /// database's path, so every answered write survives a restart.
    pub(super) fn same_file(&mut self) -> Result<(), StoreError> {
        if let Some(why) = &self.lost {
            return Err(StoreError::Replaced(why.clone()));
        }
        let db = self.identity.is_some() && identity(&self.path) != self.identity;
        let wal = self.wal_identity.is_some() && identity_of_wal(&self.path) != self.wal_identity;
        // A new shared-memory index beside a live writer would show readers
        // an old view: as much a lost file as the others.
        let shm = self.shm_identity.is_some()
            && identity(&PathBuf::from(format!("{}-shm", self.path.display())))
                != self.shm_identity;
        if !db && !wal && !shm {
            return Ok(());
        }
        let which = match (db, wal) {
            (true, true) => "the database file and its WAL were",
            (true, false) => "the database file was",
            (false, true) => "the database's WAL file was",
            (false, false) => "the database's shared-memory file (-shm) was",
        };
        let why = match self.rescue(db) {
            Ok(saved) => format!(
                "{which} removed or replaced while the daemon ran: everything stored until then was written back to {}{}; writes are refused until the daemon is restarted",
                self.path.display(),
                saved
            ),
            Err(e) => format!(
                "{which} removed or replaced while the daemon ran, and saving what the daemon holds failed ({e}): do not restart it before copying {}; writes are refused",
                self.path.display()
            ),
        };
        tracing::error!("{why}");
        self.lost = Some(why.clone());
        Err(StoreError::Replaced(why))
    }

    /// Writes the connection's whole view to a new file and puts it at the
    /// database's path. Whatever else is at that path (another database put
    /// there by hand, a WAL that is not ours) is moved aside, never deleted;
    /// the WAL of the removed file is dropped, its content being in the copy.
    fn rescue(&mut self, db_replaced: bool) -> Result<String, StoreError> {
        let stamp = crate::clock::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
        let side = |suffix: &str| PathBuf::from(format!("{}{suffix}", self.path.display()));
        let copy = side(&format!(".rescued-{stamp}"));
        self.conn
            .execute("VACUUM INTO ?1", [copy.display().to_string()])?;
        let io = |e: std::io::Error| StoreError::Backend(Box::new(e));
        std::fs::File::open(&copy)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        let mut aside = Vec::new();
        let wal = side("-wal");
        let ours = identity(&wal).is_some() && identity(&wal) == self.wal_identity;
        if ours {
            std::fs::remove_file(&wal).map_err(io)?;
        } else if wal.exists() {
            let to = side(&format!("-wal.found-{stamp}"));
            std::fs::rename(&wal, &to).map_err(io)?;
            aside.push(to);
        }
        // The shared-memory index is rebuilt from the WAL by whoever opens next.
        let _ = std::fs::remove_file(side("-shm"));
        if db_replaced && self.path.exists() {
            let to = side(&format!(".found-{stamp}"));
            std::fs::rename(&self.path, &to).map_err(io)?;
            aside.push(to);
        }
        std::fs::rename(&copy, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(if aside.is_empty() {
            String::new()
        } else {
            format!(
                " (what was found at those paths was moved aside: {})",
                aside
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }
}
