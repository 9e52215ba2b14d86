//! The pages behind one-click links (`/ack/{token}`). `GET` only shows what the
//! link would do — mail scanners fetch links — and its form `POST`s to the same
//! address, which does it. Refused links get a clear page and a 4xx, and
//! count as refusals of the client's address (`limits.rs`): a forged or
//! expired link reaches the audit log in that address's summary, at most one
//! line a minute; a genuine link refused for its incident (already used, the
//! step closed) is a line of the incident's history. Past the address's
//! refusals, a 429 and nothing recorded: guessing or replaying links cannot
//! fill the disk. A fault of ours (the store) gets a 503 page and is not
//! counted as a refusal.

use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use super::auth::Client;
use super::limits::Verdict;
use crate::clock;
use crate::engine::handle::Actor;
use crate::engine::{ActionError, HandleError, Incident, LinkAction, StepState, VIA_LINK, Verb};
use crate::html::escape;
use crate::notify::links::{Claims, LinkError};

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    (status, Html(crate::html::page(title, body))).into_response()
}

fn unavailable(why: impl std::fmt::Display) -> Response {
    tracing::error!("link page: {why}");
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again in a minute",
        "<p>branchguard cannot record or show this right now because of a fault on our side (not your link). Nothing was recorded. Try the link again shortly; if it keeps failing, call the operations centre.</p>",
    )
}

/// Counts a refused link against the client's address; a 429 page once the
/// address has no refusals left (then nothing is recorded).
fn count(s: &AppState, client: Client, detail: &str) -> Option<Response> {
    let limits = &s.loaded().config.limits;
    let (verdict, line) = s.denials.record(client.0, "link_refused", detail, limits);
    if let Some(line) = line {
        s.engine.auth_denied(line);
    }
    match verdict {
        Verdict::Refuse => None,
        Verdict::Limited => Some(page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many refused links",
            "<p>Too many links from your address were refused. Nothing was recorded. Try again in a minute, or call the operations centre.</p>",
        )),
    }
}

fn refused(s: &AppState, client: Client, token: &str, e: &LinkError) -> Response {
    let short: String = token.chars().take(16).collect();
    if let Some(limited) = count(s, client, &format!("link refused: {e} (token {short}…)")) {
        return limited;
    }
    match e {
        LinkError::Expired(at, c) => page(
            StatusCode::GONE,
            "This link has expired",
            &format!(
                "<p>It was valid until {}. Nothing was recorded.</p>\
                 <p>To answer now, call the operations centre and ask them to record it for you: \
                 incident <strong>#{}</strong>, step <strong>{}</strong>. They can do it with \
                 <code>branchguard {} {} {} --by {}</code>.</p>",
                escape(&crate::show::time(*at, s.loaded().config.calendar.timezone)),
                c.incident,
                escape(&c.step),
                escape(c.action.as_str()),
                c.incident,
                escape(&c.step),
                escape(&c.person)
            ),
        ),
        _ => page(
            StatusCode::FORBIDDEN,
            "This link is not valid",
            "<p>It was not issued by branchguard, or it was changed. Nothing was recorded.</p>",
        ),
    }
}

/// The key a link's use is recorded under: it works once.
fn use_key(c: &Claims) -> String {
    format!("{}:{}:{}", c.action.as_str(), c.step, c.person)
}

/// A genuine, in-date link whose lifetime is one branchguard gives (its
/// step's deadline plus `notify.links.margin`, or `notify.links.ttl` from
/// now, whichever is later: never decades), with its incident.
async fn checked(
    s: &AppState,
    client: Client,
    token: &str,
) -> Result<(Claims, Incident), Response> {
    let claims = s
        .links
        .verify(token, clock::now())
        .map_err(|e| refused(s, client, token, &e))?;
    let id = claims.incident;
    let reader = Arc::clone(&s.reader);
    let found = match tokio::task::spawn_blocking(move || reader.incident(id)).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => return Err(unavailable(e)),
        Err(e) => return Err(unavailable(e)),
    };
    let Some((inc, _)) = found else {
        return Err(page(
            StatusCode::NOT_FOUND,
            "Incident not found",
            "<p>The incident of this link does not exist.</p>",
        ));
    };
    let Some(step) = inc.steps.iter().find(|x| x.id == claims.step) else {
        return Err(page(
            StatusCode::NOT_FOUND,
            "Step not found",
            "<p>The step of this link does not exist.</p>",
        ));
    };
    let d = &s.loaded().config.delivery;
    let span = |x: std::time::Duration| chrono::Duration::from_std(x).unwrap_or_default();
    let bound = step
        .deadline
        .unwrap_or(inc.opened_at)
        .checked_add_signed(span(d.link_margin))
        .unwrap_or(inc.opened_at)
        .max(clock::now() + span(d.link_ttl))
        + chrono::Duration::hours(1);
    if claims.expires > bound.timestamp() {
        return Err(refused(s, client, token, &LinkError::Forged));
    }
    Ok((claims, inc))
}

pub async fn show(
    State(s): State<AppState>,
    Extension(client): Extension<Client>,
    Path(token): Path<String>,
) -> Response {
    let (claims, inc) = match checked(&s, client, &token).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(step) = inc.steps.iter().find(|x| x.id == claims.step) else {
        return page(StatusCode::NOT_FOUND, "Step not found", "");
    };
    let loaded = s.loaded();
    let person = loaded
        .config
        .people
        .get(&claims.person)
        .map_or_else(|| claims.person.clone(), |p| p.name.clone());
    let already = inc.used_links.contains(&use_key(&claims))
        || match claims.action {
            LinkAction::Safe => step.confirmed.contains(&claims.person),
            LinkAction::Ack | LinkAction::AckForTeam => {
                step.acknowledged_at.is_some() || !step.open()
            }
            LinkAction::Done => !step.open(),
            LinkAction::Escalate => inc.status != crate::engine::IncidentStatus::Open,
        };
    let title = match claims.action {
        LinkAction::Safe => "I am safe",
        LinkAction::Ack => "Acknowledge",
        LinkAction::AckForTeam => "Acknowledge for the team",
        LinkAction::Done => "Mark done",
        LinkAction::Escalate => "Escalate",
    };
    let who = match claims.action {
        LinkAction::AckForTeam => format!("{person}, for the team"),
        _ => person,
    };
    let drill = if inc.drill {
        "<p><strong>[DRILL]</strong> This is a drill.</p>"
    } else {
        ""
    };
    // The deadline as the email gave it: in the branch's time zone, with its offset.
    let tz = loaded.config.tz_of(&inc.branch);
    let details = format!(
        "{drill}<dl><dt>Incident</dt><dd>#{} {} at {} (tier {})</dd><dt>Step</dt><dd>{}</dd><dt>Who</dt><dd>{}</dd><dt>Deadline</dt><dd>{}</dd></dl>",
        inc.id,
        escape(&inc.playbook_id),
        escape(&inc.branch),
        inc.tier,
        escape(&step.title),
        escape(&who),
        step.deadline
            .map(|d| escape(&crate::show::time(d, tz)))
            .unwrap_or_else(|| "-".into())
    );
    if already {
        // Say what happened to the step: "already answered" of a step that
        // was skipped or closed with the incident sent people looking.
        let by = |t: Option<chrono::DateTime<chrono::Utc>>| {
            let who = step
                .by
                .as_ref()
                .map(|p| {
                    let name = loaded
                        .config
                        .people
                        .get(p)
                        .map_or(p.as_str(), |x| x.name.as_str());
                    format!(" by {name}")
                })
                .unwrap_or_default();
            let when = t
                .map(|t| format!(" at {}", crate::show::time(t, tz)))
                .unwrap_or_default();
            format!("{who}{when}")
        };
        let what = if inc.used_links.contains(&use_key(&claims)) {
            "This link has already been used.".to_string()
        } else {
            match step.state {
                StepState::Done => format!("This step was marked done{}.", by(step.done_at)),
                StepState::Skipped if inc.status != crate::engine::IncidentStatus::Open => {
                    "This step was skipped: the incident was resolved before it was answered."
                        .into()
                }
                StepState::Skipped => "This step was skipped.".into(),
                StepState::Failed => "This step was closed as failed.".into(),
                StepState::Acknowledged if claims.action != LinkAction::Done => {
                    format!(
                        "This step was already acknowledged{}.",
                        by(step.acknowledged_at)
                    )
                }
                _ if step.closed || !step.open() => {
                    "This step was closed when the incident was resolved.".into()
                }
                _ if inc.status != crate::engine::IncidentStatus::Open => {
                    "This incident is no longer open.".into()
                }
                _ => "This has already been answered.".into(),
            }
        };
        return page(
            StatusCode::CONFLICT,
            "Already recorded",
            &format!("{details}<p>{} Nothing more to do.</p>", escape(&what)),
        );
    }
    page(
        StatusCode::OK,
        title,
        &format!(
            "{details}<form method=\"post\"><button type=\"submit\">{}</button></form>",
            escape(claims.action.label())
        ),
    )
}

pub async fn perform(
    State(s): State<AppState>,
    Extension(client): Extension<Client>,
    Path(token): Path<String>,
) -> Response {
    let (claims, inc) = match checked(&s, client, &token).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Claims {
        incident,
        step,
        person,
        ..
    } = claims.clone();
    let mut actor = Actor::new(person, VIA_LINK).with_note(Some("via email link".into()));
    actor.link = Some(use_key(&claims));
    let result = match claims.action {
        // What the link's page says ("no longer open") holds for a POST
        // sent without it: a mailed escalate link is about the incident it
        // came with, not its follow-up (the API still escalates those).
        LinkAction::Escalate if inc.status != crate::engine::IncidentStatus::Open => {
            Err(HandleError::Action(ActionError::Conflict(format!(
                "incident {incident} is no longer open"
            ))))
        }
        LinkAction::Escalate => s.engine.escalate(incident, actor).await,
        action => {
            let verb = match action {
                LinkAction::Safe => Verb::Safe,
                LinkAction::Done => Verb::Done,
                _ => Verb::Ack,
            };
            s.engine.step(incident, step, verb, actor).await
        }
    };
    let tz = s.loaded().config.tz_of(&inc.branch);
    match result {
        Ok(()) => page(
            StatusCode::OK,
            "Thank you",
            &format!(
                "<p>Recorded at {}.</p>",
                escape(&crate::show::time(clock::now(), tz))
            ),
        ),
        Err(HandleError::Action(ActionError::Conflict(why))) => {
            // Not "already used" of a link never used: the step moved on.
            let detail = format!("not recorded: {why} ({} {})", claims.person, claims.step);
            if let Some(limited) = count(&s, client, &detail) {
                return limited;
            }
            s.engine.link_refused(Some(incident), detail);
            page(
                StatusCode::CONFLICT,
                "Already recorded",
                &format!("<p>{}. Nothing more to do.</p>", escape(&why)),
            )
        }
        Err(HandleError::Action(e)) => {
            if let Some(limited) = count(
                &s,
                client,
                &format!("{e} ({} {})", claims.person, claims.step),
            ) {
                return limited;
            }
            s.engine.link_refused(
                Some(incident),
                format!("{e} ({} {})", claims.person, claims.step),
            );
            page(
                StatusCode::NOT_FOUND,
                "Cannot record this",
                &format!("<p>{}</p>", escape(&e.to_string())),
            )
        }
        Err(e) => unavailable(e),
    }
}
