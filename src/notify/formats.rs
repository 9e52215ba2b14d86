//! Chat services' group robots: the body each one documents, and the
//! signature DingTalk and Feishu ask for. branchguard's own JSON (the
//! engine's payload) goes to a channel without a `format`; a channel with one
//! gets the same message as text in that service's shape, signed at the
//! moment it is sent (the services refuse old timestamps).
//!
//! - WeCom (企业微信) group robot: `{"msgtype":"text","text":{"content":…}}`,
//!   content at most 2,048 bytes; the key is in the URL.
//! - DingTalk (钉钉) custom robot: `{"msgtype":"text","text":{"content":…}}`;
//!   signed: `timestamp` (milliseconds) and `sign` = Base64(HMAC-SHA256(key:
//!   secret, message: timestamp + "\n" + secret)) added to the URL's query.
//! - Feishu (飞书) custom bot: `{"msg_type":"text","content":{"text":…}}`;
//!   signed: `timestamp` (seconds, a string) and `sign` = Base64(HMAC-SHA256(
//!   key: timestamp + "\n" + secret, message: empty)) in the body.
//! - Slack incoming webhook: `{"text":…}`.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::config::{WebhookConfig, WebhookFormat};

/// WeCom's limit on a text message's content, in bytes.
const WECOM_MAX: usize = 2048;

/// What to send: where, and the body.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub url: String,
    pub body: Value,
}

/// The message as a person reads it: the subject, then the text; a digest
/// lists each of its messages.
pub fn text_of(payload: &Value) -> String {
    let one = |p: &Value| {
        let subject = p["subject"].as_str().unwrap_or_default();
        let text = p["text"].as_str().unwrap_or_default();
        if text.is_empty() {
            subject.to_string()
        } else {
            format!("{subject}\n{text}")
        }
    };
    match payload["items"].as_array() {
        Some(items) if payload["schema"] == "branchguard.digest.v1" => {
            let mut out = format!("{} messages", items.len());
            for p in items {
                out.push_str("\n\n");
                out.push_str(&one(p));
            }
            out
        }
        _ => one(payload),
    }
}

fn hmac_b64(key: &[u8], message: &[u8]) -> String {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(message);
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}

/// DingTalk's signature of a request at `ms` (milliseconds since the epoch).
pub fn dingtalk_sign(secret: &str, ms: i64) -> String {
    hmac_b64(secret.as_bytes(), format!("{ms}\n{secret}").as_bytes())
}

/// Feishu's signature of a request at `secs` (seconds since the epoch).
pub fn feishu_sign(secret: &str, secs: i64) -> String {
    hmac_b64(format!("{secs}\n{secret}").as_bytes(), b"")
}

/// Cuts `s` to at most `max` bytes on a character boundary, with `…`.
fn cut_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let end = s.floor_char_boundary(max.saturating_sub('…'.len_utf8()));
    format!("{}…", &s[..end])
}

/// The request for `hook` carrying `payload` (branchguard's JSON), at `now`.
pub fn render(hook: &WebhookConfig, payload: Value, now: DateTime<Utc>) -> Outgoing {
    let secret = hook.secret.as_ref().map(|s| s.0.as_str());
    match hook.format {
        WebhookFormat::Branchguard => Outgoing {
            url: hook.url.clone(),
            body: payload,
        },
        WebhookFormat::Wecom => Outgoing {
            url: hook.url.clone(),
            body: json!({"msgtype": "text", "text": {"content": cut_bytes(&text_of(&payload), WECOM_MAX)}}),
        },
        WebhookFormat::Slack => Outgoing {
            url: hook.url.clone(),
            body: json!({ "text": text_of(&payload) }),
        },
        WebhookFormat::Dingtalk => {
            let mut url = hook.url.clone();
            if let (Some(secret), Ok(mut u)) = (secret, reqwest::Url::parse(&hook.url)) {
                let ms = now.timestamp_millis();
                u.query_pairs_mut()
                    .append_pair("timestamp", &ms.to_string())
                    .append_pair("sign", &dingtalk_sign(secret, ms));
                url = u.to_string();
            }
            Outgoing {
                url,
                body: json!({"msgtype": "text", "text": {"content": text_of(&payload)}}),
            }
        }
        WebhookFormat::Feishu => {
            let mut body = json!({"msg_type": "text", "content": {"text": text_of(&payload)}});
            if let Some(secret) = secret {
                let secs = now.timestamp();
                body["timestamp"] = json!(secs.to_string());
                body["sign"] = json!(feishu_sign(secret, secs));
            }
            Outgoing {
                url: hook.url.clone(),
                body,
            }
        }
    }
}

#[cfg(test)]
mod tests;
