//! The `notify` section of `branchguard.yaml`: the mail server, webhook
//! channels, and how delivery paces itself (slots in flight, digest windows,
//! per-channel intervals).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::*;

/// The operations centre's channel when `notify.ops_channel` is not set.
const DEFAULT_OPS_CHANNEL: &str = "ops-centre";

pub(super) struct Notify {
    pub email: Option<EmailConfig>,
    pub webhooks: BTreeMap<String, WebhookConfig>,
    pub delivery: DeliveryConfig,
    pub ops_channel: Option<String>,
}

pub(super) fn notify(file: &str, raw: &ConfigFile, diags: &mut Diagnostics) -> Notify {
    let mut webhooks = BTreeMap::new();
    let mut email = None;
    let mut delivery = DeliveryConfig {
        retry_initial: Duration::from_secs(5),
        retry_max: Duration::from_secs(300),
        horizon: Duration::from_secs(24 * 3600),
        warn_after: Duration::from_secs(5 * 60),
        link_ttl: Duration::from_secs(72 * 3600),
        link_margin: Duration::from_secs(24 * 3600),
        in_flight: 8,
        digest: Duration::from_secs(30),
    };
    if let Some(n) = &raw.notify {
        delivery.in_flight = positive(
            file,
            &n.in_flight,
            "notify.in_flight",
            delivery.in_flight,
            diags,
        );
        delivery.digest = window(file, &n.digest, "notify.digest", delivery.digest, diags);
        if let Some(r) = &n.retry {
            delivery.retry_initial = opt_fixed(
                file,
                &r.initial,
                "notify.retry.initial",
                delivery.retry_initial,
                diags,
            );
            delivery.retry_max =
                opt_fixed(file, &r.max, "notify.retry.max", delivery.retry_max, diags);
            delivery.horizon = opt_fixed(
                file,
                &r.horizon,
                "notify.retry.horizon",
                delivery.horizon,
                diags,
            );
            delivery.warn_after = opt_fixed(
                file,
                &r.warn_after,
                "notify.retry.warn_after",
                delivery.warn_after,
                diags,
            );
            if delivery.retry_max < delivery.retry_initial
                && let Some(m) = &r.max
            {
                diags.at_value(
                    file,
                    m,
                    "notify.retry.max: must not be shorter than notify.retry.initial",
                );
            }
        }
        if let Some(l) = &n.links {
            delivery.link_ttl =
                opt_fixed(file, &l.ttl, "notify.links.ttl", delivery.link_ttl, diags);
            delivery.link_margin = opt_fixed(
                file,
                &l.margin,
                "notify.links.margin",
                delivery.link_margin,
                diags,
            );
        }
        if let Some(e) = &n.email {
            if !e.from.value.contains('@') {
                diags.at_value(
                    file,
                    &e.from,
                    format!(
                        "notify.email.from: `{}` is not an email address",
                        e.from.value
                    ),
                );
            }
            email = Some(EmailConfig {
                from: e.from.value.clone(),
                smtp: e.smtp.as_ref().map(|s| SmtpConfig {
                    host: s.host.clone(),
                    port: s.port.unwrap_or(match s.security {
                        SmtpSecurity::None => 25,
                        SmtpSecurity::Starttls => 587,
                        SmtpSecurity::Tls => 465,
                    }),
                    security: s.security,
                    username: s.username.clone(),
                    password_env: s.password_env.clone(),
                    timeout: opt_fixed(
                        file,
                        &s.timeout,
                        "notify.email.smtp.timeout",
                        Duration::from_secs(30),
                        diags,
                    ),
                }),
            });
        }
        for (name, w) in &n.webhooks {
            if !(w.url.value.starts_with("http://") || w.url.value.starts_with("https://")) {
                diags.at_value(
                    file,
                    &w.url,
                    format!(
                        "notify.webhooks.{name}.url: `{}` is not an http(s) URL",
                        w.url.value
                    ),
                );
            }
            let format = match &w.format {
                None => WebhookFormat::Branchguard,
                Some(f) => WebhookFormat::parse(&f.value).unwrap_or_else(|| {
                    diags.at_value(
                        file,
                        f,
                        format!(
                            "notify.webhooks.{name}.format: unknown format `{}`: expected wecom, dingtalk, feishu or slack (or leave it out for branchguard's own JSON)",
                            crate::diag::clip_quotes(&f.value)
                        ),
                    );
                    WebhookFormat::Branchguard
                }),
            };
            let secret = w.secret_env.as_ref().and_then(|v| {
                if !format.signs() {
                    diags.at_value(
                        file,
                        v,
                        format!(
                            "notify.webhooks.{name}.secret_env: only DingTalk and Feishu robots sign their requests (format: dingtalk or feishu)"
                        ),
                    );
                    return None;
                }
                match std::env::var(&v.value) {
                    Ok(s) if !s.trim().is_empty() => Some(SigningSecret(s.trim().to_string())),
                    _ => {
                        diags.at_value(
                            file,
                            v,
                            format!(
                                "notify.webhooks.{name}.secret_env: the environment variable {} is not set",
                                v.value
                            ),
                        );
                        None
                    }
                }
            });
            webhooks.insert(
                name.clone(),
                WebhookConfig {
                    format,
                    secret,
                    url: w.url.value.clone(),
                    headers: w.headers.clone(),
                    timeout: opt_fixed(file, &w.timeout, "timeout", Duration::from_secs(10), diags),
                    min_interval: Some(window(
                        file,
                        &w.min_interval,
                        &format!("notify.webhooks.{name}.min_interval"),
                        Duration::ZERO,
                        diags,
                    ))
                    .filter(|d| !d.is_zero()),
                },
            );
        }
    }
    let ops_channel = match raw.notify.as_ref().and_then(|n| n.ops_channel.as_ref()) {
        Some(c) if !webhooks.contains_key(&c.value) => {
            diags.at_value(
                file,
                c,
                format!(
                    "notify.ops_channel: unknown channel `{}`: expected one of the webhooks under notify.webhooks ({})",
                    c.value,
                    webhooks.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
            None
        }
        Some(c) => Some(c.value.clone()),
        None => webhooks
            .contains_key(DEFAULT_OPS_CHANNEL)
            .then(|| DEFAULT_OPS_CHANNEL.to_string()),
    };
    Notify {
        email,
        webhooks,
        delivery,
        ops_channel,
    }
}

/// The longest digest window or webhook interval: the delivery worker
/// remembers each recipient's last message for this long.
const WINDOW_MAX: Duration = Duration::from_secs(3600);

/// A digest window or webhook interval: a duration up to an hour, where `0s`
/// (unlike other durations) means "none".
fn window(
    file: &str,
    v: &Option<S>,
    field: &str,
    default: Duration,
    diags: &mut Diagnostics,
) -> Duration {
    let Some(s) = v else { return default };
    if humantime::parse_duration(s.value.trim()).is_ok_and(|d| d.is_zero()) {
        return Duration::ZERO;
    }
    match fixed(file, s, field, diags) {
        Some(d) if d > WINDOW_MAX => {
            diags.at_value(
                file,
                s,
                format!(
                    "{field}: `{}` is longer than 1h: expected at most `1h`, or `0s` for none",
                    s.value
                ),
            );
            default
        }
        Some(d) => d,
        None => default,
    }
}

/// `contacts:`: each with an id no person has, an email address or a
/// webhook channel (not both), and the branches it serves.
pub(super) fn contacts(
    file: &str,
    raw: &ConfigFile,
    branch_ids: &BTreeSet<String>,
    people: &BTreeMap<String, Person>,
    webhooks: &BTreeMap<String, WebhookConfig>,
    diags: &mut Diagnostics,
) -> BTreeMap<String, Contact> {
    let mut out = BTreeMap::new();
    for c in &raw.contacts {
        let id = &c.id.value;
        let f = |name: &str| format!("contacts.{id}.{name}");
        if id.trim().is_empty() {
            diags.at_value(file, &c.id, "contacts.id: must not be empty");
            continue;
        }
        if out.contains_key(id) || people.contains_key(id) {
            diags.at_value(
                file,
                &c.id,
                format!("duplicate id `{id}`: a person or another contact has it"),
            );
            continue;
        }
        if let Some(e) = &c.email
            && !e.value.contains('@')
        {
            diags.at_value(
                file,
                e,
                format!("{}: `{}` is not an email address", f("email"), e.value),
            );
        }
        match (&c.email, &c.webhook) {
            (None, None) => diags.at_value(
                file,
                &c.id,
                format!("contact `{id}`: give `email` or `webhook` (a channel under notify.webhooks): how else is it reached?"),
            ),
            (Some(_), Some(w)) => diags.at_value(
                file,
                w,
                format!("contact `{id}`: give `email` or `webhook`, not both"),
            ),
            (None, Some(w)) if !webhooks.contains_key(&w.value) => diags.at_value(
                file,
                w,
                format!(
                    "{}: unknown channel `{}`: expected one of the webhooks under notify.webhooks ({})",
                    f("webhook"),
                    w.value,
                    webhooks.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ),
            _ => {}
        }
        let branches = match &c.branches.value {
            BranchSelection::All => None,
            BranchSelection::List(list) => {
                for b in list {
                    if !branch_ids.contains(b) {
                        diags.at_value(
                            file,
                            &c.branches,
                            format!("{}: unknown branch `{b}`", f("branches")),
                        );
                    }
                }
                Some(list.iter().cloned().collect())
            }
        };
        out.insert(
            id.clone(),
            Contact {
                id: id.clone(),
                name: c.name.clone(),
                email: c.email.as_ref().map(|e| e.value.clone()),
                webhook: c.webhook.as_ref().map(|w| w.value.clone()),
                branches,
            },
        );
    }
    out
}
