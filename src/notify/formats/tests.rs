use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::config::SigningSecret;

fn hook(format: WebhookFormat, secret: Option<&str>) -> WebhookConfig {
    WebhookConfig {
        url: "https://oapi.example/robot/send?access_token=abc".into(),
        headers: BTreeMap::new(),
        timeout: Duration::from_secs(5),
        min_interval: None,
        format,
        secret: secret.map(|s| SigningSecret(s.into())),
    }
}

fn at() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_796_000_000_123).unwrap()
}

fn payload() -> Value {
    json!({"schema": "branchguard.notification.v1", "subject": "ESCALATION Shanghai Pudong: Switch core banking", "text": "Not done 10m after it started"})
}

/// The documented algorithms, written out again from the services' words
/// (not by calling the code under test).
fn b64_hmac(key: &[u8], msg: &[u8]) -> String {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    m.update(msg);
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}

#[test]
fn dingtalk_signs_the_url_with_the_millisecond_timestamp_and_secret() {
    let out = render(
        &hook(WebhookFormat::Dingtalk, Some("SEC123")),
        payload(),
        at(),
    );
    let url = reqwest::Url::parse(&out.url).unwrap();
    let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["access_token"], "abc");
    assert_eq!(q["timestamp"], "1796000000123");
    assert_eq!(q["sign"], b64_hmac(b"SEC123", b"1796000000123\nSEC123"));
    assert_eq!(out.body["msgtype"], "text");
    assert_eq!(
        out.body["text"]["content"],
        "ESCALATION Shanghai Pudong: Switch core banking\nNot done 10m after it started"
    );
}

#[test]
fn feishu_signs_the_body_with_the_second_timestamp_as_the_key() {
    let out = render(
        &hook(WebhookFormat::Feishu, Some("SEC123")),
        payload(),
        at(),
    );
    assert_eq!(out.url, "https://oapi.example/robot/send?access_token=abc");
    assert_eq!(out.body["timestamp"], "1796000000");
    assert_eq!(out.body["sign"], b64_hmac(b"1796000000\nSEC123", b""));
    assert_eq!(out.body["msg_type"], "text");
    assert!(
        out.body["content"]["text"]
            .as_str()
            .unwrap()
            .starts_with("ESCALATION")
    );
    // Without a secret: no signature fields.
    let plain = render(&hook(WebhookFormat::Feishu, None), payload(), at());
    assert!(plain.body.get("sign").is_none());
}

#[test]
fn wecom_and_slack_bodies_and_wecoms_limit() {
    let w = render(&hook(WebhookFormat::Wecom, None), payload(), at());
    assert_eq!(w.body["msgtype"], "text");
    assert!(
        w.body["text"]["content"]
            .as_str()
            .unwrap()
            .contains("Not done")
    );
    let s = render(&hook(WebhookFormat::Slack, None), payload(), at());
    assert_eq!(
        s.body,
        json!({"text": "ESCALATION Shanghai Pudong: Switch core banking\nNot done 10m after it started"})
    );
    // Chinese text past 2,048 bytes is cut on a character, not mid-byte.
    let long = json!({"subject": "紧急", "text": "网点系统故障".repeat(200)});
    let w = render(&hook(WebhookFormat::Wecom, None), long, at());
    let content = w.body["text"]["content"].as_str().unwrap();
    assert!(
        content.len() <= 2048 && content.ends_with('…'),
        "{}",
        content.len()
    );
    // branchguard's own JSON is left as it is.
    let ours = render(&hook(WebhookFormat::Branchguard, None), payload(), at());
    assert_eq!(ours.body, payload());
}

#[test]
fn a_digest_lists_each_message() {
    let digest = json!({"schema": "branchguard.digest.v1", "count": 2, "items": [payload(), {"subject": "NOTICE x", "text": ""}]});
    assert_eq!(
        text_of(&digest),
        "2 messages\n\nESCALATION Shanghai Pudong: Switch core banking\nNot done 10m after it started\n\nNOTICE x"
    );
}
