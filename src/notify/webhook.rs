//! One webhook request: a row's payload, or a digest of several; in a chat
//! service's own format and signature where the channel names one.

use super::email::SendError;
use super::job::Job;
use crate::config::Config;
use crate::store::OutboxRow;

impl Job {
    /// One webhook request: the row's payload, or for several rows a digest
    /// payload (`branchguard.digest.v1`, docs/WEBHOOKS.md) listing each.
    pub(super) async fn send_webhook(
        &self,
        cfg: &Config,
        rows: &[OutboxRow],
    ) -> Result<String, SendError> {
        let first = &rows[0];
        let Some(hook) = cfg.webhooks.get(&first.recipient) else {
            return Err(SendError::Permanent(format!(
                "channel `{}` is no longer configured",
                first.recipient
            )));
        };
        let payload_of = |row: &OutboxRow| {
            // A stored payload is always an object. A damaged one is a fault
            // of ours, said in the log; the message still goes, with its
            // subject and text, rather than not at all (a person may be
            // waiting for it).
            let stored = row
                .payload
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok())
                .filter(serde_json::Value::is_object);
            let mut p: serde_json::Value = match stored {
                Some(p) => p,
                None => {
                    tracing::error!(
                        "outbox row {}: its stored webhook payload cannot be read (a damaged database?); sending its subject and text only",
                        row.id
                    );
                    serde_json::json!({ "schema": "branchguard.notification.v1", "subject": row.subject, "text": row.body, "damaged": true })
                }
            };
            // Stored once, in the row's columns (rows written before
            // 2026-12-08 also hold them in the payload: the same words).
            // A contact's row queued before 2026-12-08 held the staff's
            // payload: it is cut to what a contact gets when it is sent.
            if matches!(
                crate::target::Target::parse(&row.target),
                Ok(crate::target::Target::Contact(_))
            ) {
                crate::engine::for_outside(&mut p);
            }
            p["subject"] = serde_json::json!(row.subject);
            p["text"] = serde_json::json!(row.body);
            p["id"] = serde_json::json!(row.id);
            p
        };
        let (payload, key) = match rows {
            [one] => (payload_of(one), format!("branchguard-{}", one.id)),
            _ => {
                let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
                (
                    serde_json::json!({
                        "schema": "branchguard.digest.v1",
                        "id": first.id,
                        "count": rows.len(),
                        "drill": first.drill,
                        "items": rows.iter().map(payload_of).collect::<Vec<_>>(),
                    }),
                    format!(
                        "branchguard-digest-{}",
                        ids.iter().map(i64::to_string).collect::<Vec<_>>().join("-")
                    ),
                )
            }
        };
        // A chat service's robot gets its own body (and signature).
        let out = super::formats::render(hook, payload, crate::clock::now());
        let mut req = self
            .http
            .post(&out.url)
            .timeout(hook.timeout)
            .header("Idempotency-Key", key)
            .json(&out.body);
        for (k, v) in &hook.headers {
            req = req.header(k, v);
        }
        // What the history and /api/v1/status say: the scheme, host and port
        // only. Chat robots keep their access token in the query (DingTalk
        // its signature too), Slack and Feishu in the path: a viewer token
        // reading a failing channel's error must not get a way to post to it.
        let shown = shown_url(&hook.url);
        let shown = shown.as_str();
        match req.send().await {
            Ok(r) if r.status().is_success() => Ok(format!("{shown} answered {}", r.status())),
            Ok(r) => Err(SendError::Retry(format!("{shown} answered {}", r.status()))),
            Err(e) => Err(SendError::Retry(format!(
                "{shown}: {}",
                // reqwest names the URL it failed on, path and query and all.
                crate::diag::with_causes(&e.without_url())
            ))),
        }
    }
}

/// A webhook's address as it may be shown: `scheme://host:port`, and `/…`
/// when it has a path (which may be the secret).
fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let origin = u.origin().ascii_serialization();
            if u.path() == "/" && u.query().is_none() {
                origin
            } else {
                format!("{origin}/…")
            }
        }
        Err(_) => "(the configured address)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_webhook_address_is_shown_without_path_query_or_password() {
        for (url, shown) in [
            (
                "https://hooks.slack.com/services/T0/B0/secretsecret",
                "https://hooks.slack.com/…",
            ),
            (
                "https://oapi.dingtalk.com/robot/send?access_token=secret",
                "https://oapi.dingtalk.com/…",
            ),
            (
                "http://user:pw@10.0.0.5:9800/hook",
                "http://10.0.0.5:9800/…",
            ),
            ("http://10.0.0.5:9800", "http://10.0.0.5:9800"),
        ] {
            assert_eq!(super::shown_url(url), shown, "{url}");
        }
    }
}
