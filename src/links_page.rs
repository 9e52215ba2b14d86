//! The pages behind one-click links (`/ack/{token}`). `GET` only shows what the
//! link would do — mail scanners fetch links — and its form `POST`s to the same
//! address, which does it. Refused links get a clear page, a 4xx and an audit row.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::clock;
use crate::daemon::{HandleError, Input, Shared};
use crate::engine::{ActionError, Verb};
use crate::notify::links::{Claims, LinkError};
use crate::store::Store;

type AppState = Arc<Shared>;

use crate::notify::escape_html as escape;

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <meta name=\"robots\" content=\"noindex\"><title>{t} — branchguard</title>\
         <style>body{{font-family:sans-serif;max-width:36em;margin:2em auto;padding:0 1em;line-height:1.5}}\
         button{{font-size:1.2em;padding:.6em 1.4em}}dt{{font-weight:bold}}</style></head>\
         <body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    );
    (status, Html(html)).into_response()
}

fn note(s: &Shared, incident: Option<i64>, what: &str, detail: String) {
    let _ = s.engine.send(Input::Note {
        incident,
        what: what.into(),
        by: "link".into(),
        detail,
    });
}

fn refused(s: &Shared, token: &str, e: &LinkError) -> Response {
    let short: String = token.chars().take(16).collect();
    note(s, None, "link.refused", format!("{e} (token {short}…)"));
    match e {
        LinkError::Expired(at) => page(
            StatusCode::GONE,
            "This link has expired",
            &format!(
                "<p>It was valid until {}. Answer from the operations dashboard or ask the operations centre.</p>",
                escape(&at.to_rfc3339())
            ),
        ),
        _ => page(
            StatusCode::FORBIDDEN,
            "This link is not valid",
            "<p>It was not issued by branchguard, or it was changed. Nothing was recorded.</p>",
        ),
    }
}

fn verb_of(c: &Claims) -> Option<Verb> {
    match c.action.as_str() {
        "ack" => Some(Verb::Ack),
        "safe" => Some(Verb::Safe),
        _ => None,
    }
}

pub async fn show(State(s): State<AppState>, Path(token): Path<String>) -> Response {
    let claims = match s.links.verify(&token, clock::now()) {
        Ok(c) => c,
        Err(e) => return refused(&s, &token, &e),
    };
    let id = claims.incident;
    let s2 = Arc::clone(&s);
    let found = tokio::task::spawn_blocking(move || {
        s2.reader
            .lock()
            .ok()
            .and_then(|r| r.incident(id).ok().flatten())
    })
    .await
    .ok()
    .flatten();
    let Some((inc, _)) = found else {
        return page(
            StatusCode::NOT_FOUND,
            "Incident not found",
            "<p>The incident of this link does not exist.</p>",
        );
    };
    let Some(step) = inc.steps.iter().find(|x| x.id == claims.step) else {
        return page(
            StatusCode::NOT_FOUND,
            "Step not found",
            "<p>The step of this link does not exist.</p>",
        );
    };
    let person = s
        .loaded
        .read()
        .ok()
        .and_then(|l| l.config.people.get(&claims.person).map(|p| p.name.clone()))
        .unwrap_or_else(|| claims.person.clone());
    let already = match claims.action.as_str() {
        "safe" => step.confirmed.contains(&claims.person),
        _ => step.acknowledged_at.is_some() || !step.state.is_open(),
    };
    let (title, button) = if claims.action == "safe" {
        ("I am safe", "Confirm: I am safe")
    } else {
        ("Acknowledge", "Acknowledge this step")
    };
    let drill = if inc.drill {
        "<p><strong>[DRILL]</strong> This is a drill.</p>"
    } else {
        ""
    };
    let details = format!(
        "{drill}<dl><dt>Incident</dt><dd>#{} {} at {} (tier {})</dd><dt>Step</dt><dd>{}</dd><dt>Who</dt><dd>{}</dd><dt>Deadline</dt><dd>{}</dd></dl>",
        inc.id,
        escape(&inc.playbook_id),
        escape(&inc.branch),
        inc.tier,
        escape(&step.title),
        escape(&person),
        step.deadline
            .map(|d| escape(&d.to_rfc3339()))
            .unwrap_or_else(|| "-".into())
    );
    if already {
        return page(
            StatusCode::CONFLICT,
            "Already recorded",
            &format!("{details}<p>This has already been answered; nothing more to do.</p>"),
        );
    }
    page(
        StatusCode::OK,
        title,
        &format!(
            "{details}<form method=\"post\"><button type=\"submit\">{}</button></form>",
            escape(button)
        ),
    )
}

pub async fn perform(State(s): State<AppState>, Path(token): Path<String>) -> Response {
    let claims = match s.links.verify(&token, clock::now()) {
        Ok(c) => c,
        Err(e) => return refused(&s, &token, &e),
    };
    let Some(verb) = verb_of(&claims) else {
        return refused(&s, &token, &LinkError::Malformed);
    };
    let Claims {
        incident,
        step,
        person,
        ..
    } = claims.clone();
    let result = s
        .engine
        .act(|reply| Input::Step {
            incident,
            step,
            verb,
            by: Some(person),
            note: Some("via email link".into()),
            reply,
        })
        .await;
    match result {
        Ok(()) => page(
            StatusCode::OK,
            "Thank you",
            &format!("<p>Recorded at {}.</p>", escape(&clock::now().to_rfc3339())),
        ),
        Err(HandleError::Action(ActionError::Conflict(why))) => {
            note(
                &s,
                Some(incident),
                "link.refused",
                format!("already used: {why} ({} {})", claims.person, claims.step),
            );
            page(
                StatusCode::CONFLICT,
                "Already recorded",
                &format!("<p>{}. Nothing more to do.</p>", escape(&why)),
            )
        }
        Err(HandleError::Action(e)) => {
            note(
                &s,
                Some(incident),
                "link.refused",
                format!("{e} ({} {})", claims.person, claims.step),
            );
            page(
                StatusCode::NOT_FOUND,
                "Cannot record this",
                &format!("<p>{}</p>", escape(&e.to_string())),
            )
        }
        Err(e) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again",
            &format!("<p>{}</p>", escape(&e.to_string())),
        ),
    }
}
