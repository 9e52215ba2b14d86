//! Email through lettre: SMTP (none, STARTTLS or TLS, optional login) when
//! configured, otherwise `.eml` files under `data_dir/mail` — the default, so the
//! bundled example works on a machine with no mail server. Mail files are named
//! so a person can tell them apart in a listing: when, which incident, which
//! outbox row, to whom (`20261124-091500-incident-1-row-3-sun.hao@bank.example.eml`).

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use lettre::message::MultiPart;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{Config, SmtpSecurity};

pub enum Mailer {
    /// The transport, and the server as `host:port` for the history.
    Smtp(AsyncSmtpTransport<Tokio1Executor>, String),
    Files(PathBuf),
}

/// Who, what and when of one message.
pub struct Envelope<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub subject: &'a str,
    pub incident: i64,
    /// The outbox row: unique, so two messages never share a file name.
    pub row: i64,
    /// The `Message-ID`'s left part, the same at every attempt of one mail
    /// ([`message_id`]).
    pub message_id: String,
    pub at: DateTime<Utc>,
}

/// A mail's `Message-ID` (left of the `@`): one row's is
/// `branchguard-row-ID`, the same at every attempt, so a mail sent again
/// after a crash is known as the same one. A digest's names its whole set:
/// it is not its first row's mail, and a mail store that drops a repeated
/// Message-ID must not drop a digest that also carries new messages.
pub fn message_id(rows: &[i64]) -> String {
    use sha2::{Digest, Sha256};
    match rows {
        [one] => format!("branchguard-row-{one}"),
        _ => {
            let mut h = Sha256::new();
            for r in rows {
                h.update(r.to_be_bytes());
            }
            let hex: String = h.finalize()[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!(
                "branchguard-digest-{}-{}-{hex}",
                rows.first().copied().unwrap_or_default(),
                rows.len()
            )
        }
    }
}

/// The file name of a message written to the mail directory.
pub fn file_name(e: &Envelope<'_>) -> String {
    let to: String =
        e.to.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "@.-_+".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
    format!(
        "{}-incident-{}-row-{}-{to}.eml",
        e.at.format("%Y%m%d-%H%M%S"),
        e.incident,
        e.row
    )
}

/// Whether trying again later can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    Retry(String),
    Permanent(String),
}

/// `s` with CRLF line endings, in one pass. lettre makes them itself by
/// inserting a `\r` before each bare `\n` in place, which is quadratic: a
/// 2,000-message digest (4 MB, 60,000 lines) held both cores for seconds in
/// the storm benchmark's profile. Given CRLF, it finds nothing to insert.
fn crlf(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 16);
    let mut prev = '\0';
    for c in s.chars() {
        if c == '\n' && prev != '\r' {
            out.push('\r');
        }
        out.push(c);
        prev = c;
    }
    out
}

impl Mailer {
    pub fn new(cfg: &Config) -> Result<Mailer, super::NotifyError> {
        use super::NotifyError::Email;
        let Some(smtp) = cfg.email.as_ref().and_then(|e| e.smtp.as_ref()) else {
            let dir = cfg.data_dir.join("mail");
            crate::private::create_dir(&dir)
                .map_err(|e| Email(format!("cannot create {}: {e}", dir.display())))?;
            return Ok(Mailer::Files(dir));
        };
        let builder = match smtp.security {
            SmtpSecurity::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
            }
            SmtpSecurity::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
                    .map_err(|e| Email(e.to_string()))?
            }
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)
                .map_err(|e| Email(e.to_string()))?,
        };
        let mut builder = builder.port(smtp.port).timeout(Some(smtp.timeout));
        if let Some(user) = &smtp.username {
            let password = match &smtp.password_env {
                Some(var) => std::env::var(var).map_err(|_| {
                    Email(format!("notify.email.smtp.password_env: {var} is not set"))
                })?,
                None => String::new(),
            };
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Mailer::Smtp(
            builder.build(),
            format!("{}:{}", smtp.host, smtp.port),
        ))
    }

    /// Sends one message; says how it went (accepted by the server, or
    /// written to which file).
    pub async fn send(
        &self,
        e: &Envelope<'_>,
        text: String,
        html: String,
    ) -> Result<String, SendError> {
        let from = e
            .from
            .parse()
            .map_err(|err| SendError::Permanent(format!("bad sender `{}`: {err}", e.from)))?;
        let to =
            e.to.parse()
                .map_err(|err| SendError::Permanent(format!("bad recipient `{}`: {err}", e.to)))?;
        let msg = Message::builder()
            .from(from)
            .to(to)
            .subject(e.subject)
            // Stable per outbox row: a message sent again after a crash (at
            // least once) is recognised by mail clients as the same one.
            .message_id(Some(format!("<{}@branchguard>", e.message_id)))
            .header(IncidentHeader(e.incident.to_string()))
            .multipart(MultiPart::alternative_plain_html(crlf(&text), crlf(&html)))
            .map_err(|err| SendError::Permanent(format!("cannot build the message: {err}")))?;
        match self {
            Mailer::Smtp(t, server) => t
                .send(msg)
                .await
                .map(|_| format!("accepted by {server}"))
                .map_err(|err| {
                    if err.is_permanent() {
                        SendError::Permanent(err.to_string())
                    } else {
                        SendError::Retry(err.to_string())
                    }
                }),
            Mailer::Files(dir) => {
                // Written under a temporary name and renamed, so a reader never
                // sees half a message.
                let name = file_name(e);
                let tmp = dir.join(format!(".{name}.tmp"));
                let write = async {
                    tokio::fs::write(&tmp, msg.formatted()).await?;
                    tokio::fs::rename(&tmp, dir.join(&name)).await
                };
                write
                    .await
                    .map(|()| format!("written to {}", dir.join(&name).display()))
                    .map_err(|err| {
                        SendError::Retry(format!(
                            "cannot write {}: {err}",
                            dir.join(&name).display()
                        ))
                    })
            }
        }
    }
}

/// `X-Branchguard-Incident`, so mail rules can thread and filter.
#[derive(Clone)]
struct IncidentHeader(String);

impl lettre::message::header::Header for IncidentHeader {
    fn name() -> lettre::message::header::HeaderName {
        lettre::message::header::HeaderName::new_from_ascii_str("X-Branchguard-Incident")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(IncidentHeader(s.to_string()))
    }

    fn display(&self) -> lettre::message::header::HeaderValue {
        lettre::message::header::HeaderValue::new(Self::name(), self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::{crlf, message_id};

    #[test]
    fn line_endings_become_crlf_once() {
        assert_eq!(crlf("a\nb\r\nc\n\n"), "a\r\nb\r\nc\r\n\r\n");
        assert_eq!(crlf("\nä\n"), "\r\nä\r\n");
        assert_eq!(crlf("no newline"), "no newline");
        // What lettre receives has no bare LF left for it to fix.
        let big = "line\n".repeat(60_000);
        let fixed = crlf(&big);
        assert_eq!(fixed.matches("\r\n").count(), 60_000);
        assert!(!fixed.replace("\r\n", "").contains('\n'));
    }

    #[test]
    fn a_digest_is_named_by_its_whole_set_and_a_row_by_itself() {
        assert_eq!(message_id(&[7]), "branchguard-row-7");
        let d = message_id(&[7, 8, 9]);
        assert!(d.starts_with("branchguard-digest-7-3-"), "{d}");
        assert_eq!(d, message_id(&[7, 8, 9]), "the same set, the same id");
        assert_ne!(d, message_id(&[7, 8]));
        assert_ne!(d, message_id(&[7, 8, 10]));
    }
}
