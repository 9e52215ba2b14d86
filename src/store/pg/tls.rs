//! How a connection to PostgreSQL is made: in plain text, or in TLS that
//! verifies the server's certificate and host name against the CA
//! certificates the URL's `sslrootcert` names (see `config::pg_target`).

use std::sync::Arc;

use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls;

use super::StoreError;

/// The client settings and TLS of `url`.
pub(super) fn target(
    url: &str,
) -> Result<(tokio_postgres::Config, Option<MakeRustlsConnect>), StoreError> {
    // Checked when the configuration was loaded; the CA file may have gone
    // since.
    let t = crate::config::pg_target(url)
        .map_err(|why| StoreError::Refused(format!("the PostgreSQL URL: {why}")))?;
    let mut config = t.config;
    // A database that does not answer is a fault to report, not a hang.
    config.connect_timeout(std::time::Duration::from_secs(5));
    config.application_name("branchguard");
    let tls = match t.tls {
        None => None,
        Some(certs) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| StoreError::Refused(format!("sslrootcert: {e}")))?;
            }
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| StoreError::Backend(Box::new(e)))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(MakeRustlsConnect::new(tls))
        }
    };
    Ok((config, tls))
}
