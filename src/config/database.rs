//! Which database holds the records, as the configuration names it.

use std::path::PathBuf;

/// Where the records are kept: the embedded database in a data directory
/// (the default), or a PostgreSQL database shared by several daemons.
#[derive(Clone)]
pub enum Database {
    Embedded(PathBuf),
    Postgres(PgUrl),
}

/// A PostgreSQL URL, which carries a password: shown without it.
#[derive(Clone)]
pub struct PgUrl {
    url: String,
    shown: String,
}

impl PgUrl {
    /// The URL itself, for connecting (never for showing).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Database {
    /// A PostgreSQL location, if `url` is one.
    pub fn postgres(url: &str) -> Result<Database, String> {
        let c: ::postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
        let host = c
            .get_hosts()
            .iter()
            .map(|h| match h {
                ::postgres::config::Host::Tcp(h) => h.clone(),
                ::postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect::<Vec<_>>()
            .join(",");
        let port = c.get_ports().first().copied().unwrap_or(5432);
        let db = c.get_dbname().or(c.get_user()).unwrap_or("postgres");
        Ok(Database::Postgres(PgUrl {
            url: url.to_string(),
            shown: format!("PostgreSQL database {db} at {host}:{port}"),
        }))
    }
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Embedded(dir) => write!(f, "the database in {}", dir.display()),
            Database::Postgres(u) => f.write_str(&u.shown),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
