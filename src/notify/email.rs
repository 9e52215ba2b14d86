//! Email through lettre: SMTP (none, STARTTLS or TLS, optional login) when
//! configured, otherwise `.eml` files under `data_dir/mail` — the default, so the
//! bundled example works on a machine with no mail server.

use lettre::message::MultiPart;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{Config, SmtpSecurity};

pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(AsyncFileTransport<Tokio1Executor>),
}

/// Whether trying again later can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    Retry(String),
    Permanent(String),
}

impl Mailer {
    pub fn new(cfg: &Config) -> Result<Mailer, super::NotifyError> {
        use super::NotifyError::Email;
        let Some(smtp) = cfg.email.as_ref().and_then(|e| e.smtp.as_ref()) else {
            let dir = cfg.data_dir.join("mail");
            std::fs::create_dir_all(&dir)
                .map_err(|e| Email(format!("cannot create {}: {e}", dir.display())))?;
            return Ok(Mailer::Files(AsyncFileTransport::new(dir)));
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
        Ok(Mailer::Smtp(builder.build()))
    }

    pub async fn send(
        &self,
        from: &str,
        to: &str,
        subject: &str,
        text: String,
        html: String,
        incident: i64,
    ) -> Result<(), SendError> {
        let from = from
            .parse()
            .map_err(|e| SendError::Permanent(format!("bad sender `{from}`: {e}")))?;
        let to = to
            .parse()
            .map_err(|e| SendError::Permanent(format!("bad recipient `{to}`: {e}")))?;
        let msg = Message::builder()
            .from(from)
            .to(to)
            .subject(subject)
            .header(IncidentHeader(incident.to_string()))
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| SendError::Permanent(format!("cannot build the message: {e}")))?;
        match self {
            Mailer::Smtp(t) => t.send(msg).await.map(|_| ()).map_err(|e| {
                if e.is_permanent() {
                    SendError::Permanent(e.to_string())
                } else {
                    SendError::Retry(e.to_string())
                }
            }),
            Mailer::Files(t) => t
                .send(msg)
                .await
                .map(|_| ())
                .map_err(|e| SendError::Retry(e.to_string())),
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
