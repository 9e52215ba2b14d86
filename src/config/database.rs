//! Which database holds the records, as the configuration names it.

use std::path::{Path, PathBuf};

use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;

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

/// What a connection to PostgreSQL is made with: the client's settings and,
/// for TLS, the CA certificates the server's certificate must chain to.
pub struct PgTarget {
    pub config: ::tokio_postgres::Config,
    pub tls: Option<Vec<CertificateDer<'static>>>,
}

/// The TLS settings of libpq's URLs, read here: the client underneath
/// knows only `disable`, `prefer` and `require`, and no `sslrootcert`.
/// `require`, `verify-ca` and `verify-full` all mean TLS with the
/// certificate and the host name verified against `sslrootcert`; `prefer`
/// and `allow` are refused, as they fall back to plain text unannounced.
pub fn pg_target(url: &str) -> Result<PgTarget, String> {
    let (rest, mode, root) = ssl_settings(url)?;
    let tls = match (mode.as_deref(), root) {
        (None | Some("disable"), None) => None,
        (None | Some("disable"), Some(_)) => {
            return Err(
                "sslrootcert is given but sslmode is not require, verify-ca or verify-full".into(),
            );
        }
        (Some("allow" | "prefer"), _) => {
            return Err(format!(
                "sslmode={} may fall back to an unencrypted connection without saying so: use sslmode=verify-full with sslrootcert=FILE, or sslmode=disable",
                mode.unwrap_or_default()
            ));
        }
        (Some("require" | "verify-ca" | "verify-full"), None) => {
            return Err(format!(
                "sslmode={} needs sslrootcert=FILE: the CA certificate (PEM) that signed the server's (branchguard always verifies the certificate and the host name)",
                mode.unwrap_or_default()
            ));
        }
        (Some("require" | "verify-ca" | "verify-full"), Some(root)) => {
            Some(ca_certificates(&root)?)
        }
        (Some(other), _) => {
            return Err(format!(
                "sslmode={other} is not one of disable, require, verify-ca, verify-full"
            ));
        }
    };
    let mut config: ::tokio_postgres::Config = rest.parse().map_err(|e| format!("{e}"))?;
    config.ssl_mode(if tls.is_some() {
        ::tokio_postgres::config::SslMode::Require
    } else {
        ::tokio_postgres::config::SslMode::Disable
    });
    Ok(PgTarget { config, tls })
}

/// `url` without its `sslmode` and `sslrootcert`, and their values, in
/// either of libpq's forms (a URL's query, or `key=value` words).
fn ssl_settings(url: &str) -> Result<(String, Option<String>, Option<PathBuf>), String> {
    let mut mode = None;
    let mut root = None;
    let mut take = |key: &str, value: String| match key {
        "sslmode" => mode = Some(value),
        _ => root = Some(PathBuf::from(value)),
    };
    let is_ssl = |k: &str| k == "sslmode" || k == "sslrootcert";
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&') {
                    match pair.split_once('=') {
                        Some((k, v)) if is_ssl(k) => take(
                            k,
                            percent_encoding::percent_decode_str(v)
                                .decode_utf8()
                                .map_err(|_| format!("{k} is not UTF-8"))?
                                .into_owned(),
                        ),
                        _ => kept.push(pair),
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            match word.split_once('=') {
                Some((k, v)) if is_ssl(k) => {
                    if v.starts_with('\'') {
                        return Err(format!("{k}: give its value without quotes"));
                    }
                    take(k, v.to_string());
                }
                _ => kept.push(word),
            }
        }
        kept.join(" ")
    };
    Ok((rest, mode, root))
}

/// The certificates of the PEM file at `path` (absolute: the daemon's
/// working directory is the service manager's choice).
pub fn ca_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    if !path.is_absolute() {
        return Err(format!(
            "sslrootcert {} is not an absolute path",
            path.display()
        ));
    }
    // A CA bundle is kilobytes; a device or a pipe would be read forever.
    const MOST: u64 = 4 << 20;
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => {
            return Err(format!(
                "sslrootcert {} is not a regular file",
                path.display()
            ));
        }
        Ok(m) if m.len() > MOST => {
            return Err(format!(
                "sslrootcert {} is {} bytes: a CA file is at most {MOST}",
                path.display(),
                m.len()
            ));
        }
        Ok(_) => {}
        Err(e) => return Err(format!("sslrootcert {}: {e}", path.display())),
    }
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "sslrootcert {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

impl Database {
    /// A PostgreSQL location, if `url` is one.
    pub fn postgres(url: &str) -> Result<Database, String> {
        let PgTarget { config: c, tls } = pg_target(url)?;
        let host = c
            .get_hosts()
            .iter()
            .map(|h| match h {
                ::tokio_postgres::config::Host::Tcp(h) => h.clone(),
                ::tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect::<Vec<_>>()
            .join(",");
        let port = c.get_ports().first().copied().unwrap_or(5432);
        let db = c.get_dbname().or(c.get_user()).unwrap_or("postgres");
        Ok(Database::Postgres(PgUrl {
            url: url.to_string(),
            shown: format!(
                "PostgreSQL database {db} at {host}:{port}{}",
                if tls.is_some() { " (TLS)" } else { "" }
            ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_settings_are_read_from_either_form_and_left_out_of_the_rest() {
        let (rest, mode, root) = ssl_settings(
            "postgres://bg:pw@db:5432/bg?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fbank%20ca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://bg:pw@db:5432/bg?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root, Some(PathBuf::from("/etc/bank ca.pem")));
        let (rest, mode, root) =
            ssl_settings("host=db user=bg sslmode=require sslrootcert=/etc/ca.pem dbname=bg")
                .unwrap();
        assert_eq!(rest, "host=db user=bg dbname=bg");
        assert_eq!(mode.as_deref(), Some("require"));
        assert_eq!(root, Some(PathBuf::from("/etc/ca.pem")));
        let (rest, mode, root) = ssl_settings("postgres://db/bg").unwrap();
        assert_eq!(
            (rest.as_str(), mode, root),
            ("postgres://db/bg", None, None)
        );
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("ca.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let err = ca_certificates(&junk).unwrap_err();
        assert!(err.contains("holds no PEM certificate"), "{err}");
    }

    #[test]
    fn plain_text_is_said_and_tls_is_never_unverified() {
        let plain = pg_target("postgres://db/bg").unwrap();
        assert!(plain.tls.is_none());
        assert_eq!(
            plain.config.get_ssl_mode(),
            ::tokio_postgres::config::SslMode::Disable
        );
        for (url, says) in [
            ("postgres://db/bg?sslmode=allow", "may fall back"),
            ("host=db sslmode=prefer", "may fall back"),
            (
                "postgres://db/bg?sslmode=verify-ca",
                "needs sslrootcert=FILE",
            ),
            (
                "postgres://db/bg?sslrootcert=/etc/ca.pem",
                "sslmode is not require",
            ),
            ("postgres://db/bg?sslmode=on", "not one of disable"),
            (
                "host=db sslmode=require sslrootcert='/a b'",
                "without quotes",
            ),
            (
                "postgres://db/bg?sslmode=require&sslrootcert=/nonexistent/ca.pem",
                "/nonexistent/ca.pem",
            ),
            (
                "postgres://db/bg?sslmode=require&sslrootcert=/dev/zero",
                "is not a regular file",
            ),
        ] {
            let err = pg_target(url)
                .err()
                .unwrap_or_else(|| panic!("{url} is refused"));
            assert!(err.contains(says), "{url}: {err}");
        }
    }
}
