//! One delivery: a single message, or a digest of several due messages to the
//! same recipient (an email to one person, or one webhook request), sent in one
//! attempt whose outcome is recorded on every row it carried.
//!
//! **Invariant:** a digest carries every row's own text and one-click links
//! (each signed for that row alone), so nothing is lost by combining, and drill
//! and real messages are never in the same digest (the worker groups them
//! apart).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Senders;
use super::email::{self, SendError};
use super::links::{Claims, Secret};
use crate::clock;
use crate::config::Config;
use crate::engine::{Attempt, ChannelKind, DeliveryUpdate, LinkAction};
use crate::html::escape;
use crate::store::OutboxRow;

/// The longest one delivery attempt may take: three times the channel's own
/// timeout (an SMTP exchange is several round trips), at least 10 s, and 2 s
/// more for each megabyte of message text (a large digest on a slow relay).
fn attempt_limit(cfg: &Config, rows: &[OutboxRow]) -> Duration {
    let Some(row) = rows.first() else {
        return Duration::from_secs(10);
    };
    let bytes: usize = rows.iter().map(|r| r.body.len()).sum();
    let size = Duration::from_secs(2 * (bytes / 1_000_000) as u64);
    let own = match row.channel {
        ChannelKind::Email => cfg
            .email
            .as_ref()
            .and_then(|e| e.smtp.as_ref())
            .map(|s| s.timeout),
        ChannelKind::Webhook => cfg.webhooks.get(&row.recipient).map(|w| w.timeout),
    };
    (own.unwrap_or(Duration::from_secs(30)) * 3).max(Duration::from_secs(10)) + size
}

/// One delivery, with everything it needs.
pub(super) struct Job {
    pub senders: Senders,
    pub http: reqwest::Client,
    pub secret: Secret,
    /// Active/standby: nothing is sent unless this node leads.
    pub ha: Option<std::sync::Arc<crate::ha::Ha>>,
}

/// A message's text and HTML, its links included.
struct Rendered {
    text: String,
    html: String,
}

impl Job {
    /// Sends `rows` (all to the same recipient; usually one) and returns the
    /// outcome of each.
    pub async fn deliver(&self, rows: Vec<OutboxRow>) -> Vec<Attempt> {
        let cfg = &self.senders.config;
        let Some(first) = rows.first() else {
            return Vec::new();
        };
        // A leader paused past its lease (its new leader sends these now)
        // sends nothing, and records nothing: it is about to stop.
        if self.ha.as_ref().is_some_and(|h| !h.is_leader()) {
            tracing::warn!(
                "delivery: not sending outbox rows {:?}: this node no longer leads",
                rows.iter().map(|r| r.id).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Vec::new();
        }
        // A watchdog over the whole attempt. lettre's async SMTP `timeout`
        // bounds only connecting (lettre issue #1027): a server that accepts
        // and never greets - seen in the storm test, with a busy server's
        // backlog - would hold the lane slot and the rows forever.
        let limit = attempt_limit(cfg, &rows);
        let send = async {
            match (first.channel, rows.len()) {
                (ChannelKind::Email, 1) => self.send_email(cfg, first).await,
                (ChannelKind::Email, _) => self.send_digest_email(cfg, &rows).await,
                (ChannelKind::Webhook, _) => self.send_webhook(cfg, &rows).await,
            }
        };
        let result: Result<String, SendError> = match tokio::time::timeout(limit, send).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Retry(format!(
                "no outcome within {}",
                crate::show::span(limit)
            ))),
        };
        let now = clock::now();
        rows.into_iter()
            .map(|row| outcome(cfg, row, &result, now))
            .collect()
    }

    /// The row's one-click links, each signed for its recipient.
    fn links(&self, cfg: &Config, row: &OutboxRow) -> Vec<(LinkAction, String)> {
        let (Some(step), Some(person)) = (&row.step, &row.person) else {
            return Vec::new();
        };
        // Valid for the TTL at least, and until the step's deadline plus the
        // margin: a link must not die before the work it asks for is due.
        let ttl = clock::now()
            + chrono::Duration::from_std(cfg.delivery.link_ttl)
                .unwrap_or(chrono::Duration::days(3));
        let expires = row.link_until.map_or(ttl, |until| until.max(ttl));
        row.links
            .iter()
            .map(|&action| {
                let token = self.secret.sign(&Claims {
                    incident: row.incident,
                    step: step.clone(),
                    person: person.clone(),
                    action,
                    expires: expires.timestamp(),
                });
                (action, format!("{}/ack/{token}", cfg.public_url))
            })
            .collect()
    }

    /// The row's text with its incident page link carrying a signed,
    /// read-only grant for that one incident: a browser sends no API token,
    /// and the page opens from the message alone (until the incident's last
    /// deadline plus seven days).
    fn granted(&self, cfg: &Config, row: &OutboxRow) -> String {
        let Some(until) = row.grant_until else {
            return row.body.clone();
        };
        let page = format!("{}/incidents/{}", cfg.public_url, row.incident);
        let grant = self.secret.sign_grant(row.incident, until);
        // The page address ends its line in every body the engine writes.
        row.body
            .replace(&format!("{page}\n"), &format!("{page}?grant={grant}\n"))
    }

    /// The row's text with its links, and the same as HTML with the links as
    /// buttons big enough for a phone.
    fn render(&self, cfg: &Config, row: &OutboxRow) -> Rendered {
        let mut text = self.granted(cfg, row);
        let mut html = format!(
            "<pre style=\"font:14px/1.4 monospace;white-space:pre-wrap\">{}</pre>",
            escape(&text)
        );
        let links = self.links(cfg, row);
        if !links.is_empty() {
            text.push_str("\nEach link opens a page with a confirm button:\n");
        }
        for (action, url) in links {
            let what = action.label();
            text.push_str(&format!("\n{what}:\n{url}\n"));
            let colour = match action {
                LinkAction::Escalate => "#c30",
                _ => "#0b5",
            };
            html.push_str(&format!(
                "<p><a href=\"{}\" style=\"display:inline-block;padding:12px 24px;background:{colour};color:#fff;font:bold 18px sans-serif;text-decoration:none;border-radius:6px\">{what}</a></p>",
                escape(&url)
            ));
        }
        Rendered { text, html }
    }

    async fn mail(
        &self,
        cfg: &Config,
        rows: &[OutboxRow],
        subject: &str,
        text: String,
        html: String,
    ) -> Result<String, SendError> {
        let first = &rows[0];
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let from = cfg
            .email
            .as_ref()
            .map_or("branchguard <branchguard@localhost>", |e| e.from.as_str());
        let envelope = email::Envelope {
            from,
            to: &first.recipient,
            subject,
            incident: first.incident,
            row: first.id,
            message_id: email::message_id(&ids),
            at: clock::now(),
        };
        self.senders.mailer.send(&envelope, text, html).await
    }

    async fn send_email(&self, cfg: &Config, row: &OutboxRow) -> Result<String, SendError> {
        let r = self.render(cfg, row);
        let html = format!("<!doctype html><html><body>{}</body></html>", r.html);
        self.mail(cfg, std::slice::from_ref(row), &row.subject, r.text, html)
            .await
    }

    /// Several messages to one person as one email: a list first, then each
    /// message in full with its own links.
    async fn send_digest_email(
        &self,
        cfg: &Config,
        rows: &[OutboxRow],
    ) -> Result<String, SendError> {
        let first = &rows[0];
        let drill = first.drill;
        let mut seen = std::collections::HashSet::new();
        let incidents: Vec<i64> = rows
            .iter()
            .map(|r| r.incident)
            .filter(|i| seen.insert(*i))
            .collect();
        // What the first asks leads, as in every subject; then how many
        // more, within the 78 characters a phone shows.
        let mark = crate::engine::drill_mark(drill);
        let head = first.subject.strip_prefix(mark).unwrap_or(&first.subject);
        let (ask, rest) = head.split_once(' ').unwrap_or((head, ""));
        let subject = crate::engine::cut(
            &format!(
                "{mark}{ask} +{} more ({} incidents): {rest}",
                rows.len() - 1,
                incidents.len(),
            ),
            crate::engine::SUBJECT_MAX,
        );
        let mut text = format!(
            "{} messages for you, combined into one email. Each has its own links, and each link works on its own.\n\n",
            rows.len()
        );
        let mut html = format!(
            "<!doctype html><html><body><p>{} messages for you, combined into one email. Each has its own links, and each link works on its own.</p><ol>",
            rows.len()
        );
        for (n, r) in rows.iter().enumerate() {
            text.push_str(&format!("{}. {}\n", n + 1, r.subject));
            html.push_str(&format!("<li>{}</li>", escape(&r.subject)));
        }
        html.push_str("</ol>");
        for (n, r) in rows.iter().enumerate() {
            let part = self.render(cfg, r);
            text.push_str(&format!(
                "\n---------- {} of {}: {} ----------\n{}\n",
                n + 1,
                rows.len(),
                r.subject,
                part.text
            ));
            html.push_str(&format!(
                "<hr><h2 style=\"font:bold 16px sans-serif\">{} of {}: {}</h2>{}",
                n + 1,
                rows.len(),
                escape(&r.subject),
                part.html
            ));
        }
        html.push_str("</body></html>");
        self.mail(cfg, rows, &subject, text, html).await
    }
}

/// What one attempt made of one row: delivered, retried later, or given up.
fn outcome(
    cfg: &Config,
    row: OutboxRow,
    result: &Result<String, SendError>,
    now: DateTime<Utc>,
) -> Attempt {
    let attempts = row.attempts + 1;
    let mut update = DeliveryUpdate {
        id: row.id,
        attempts,
        delivered_at: None,
        next_attempt_at: None,
        failed_at: None,
        last_error: None,
    };
    let error = match result {
        Ok(_) => {
            update.delivered_at = Some(now);
            None
        }
        Err(SendError::Retry(e)) => {
            update.next_attempt_at =
                super::next_attempt(&cfg.delivery, row.id, attempts, row.created_at, now);
            if update.next_attempt_at.is_none() {
                update.failed_at = Some(now);
            }
            update.last_error = Some(e.clone());
            Some(e.clone())
        }
        Err(SendError::Permanent(e)) => {
            update.failed_at = Some(now);
            update.last_error = Some(e.clone());
            Some(e.clone())
        }
    };
    Attempt {
        update,
        incident: row.incident,
        step: row.step,
        announcement: row.announcement,
        channel: row.channel,
        target: row.target,
        recipient: row.recipient,
        error,
        how: result.as_ref().ok().cloned(),
    }
}
